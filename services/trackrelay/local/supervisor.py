"""Supervise ``trackrelay up``'s children: reap every exit and restart with backoff.

As a process supervisor would (supervisord, systemd's ``Restart=always``): a
child that exits while still wanted is reaped at once (no zombie), restarted
after an exponential backoff that resets once it has run ``stable_after``
seconds, and counted. Children are stopped in the reverse of their start order,
so forwarders and the relay stop before the Redis they use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from trackrelay.control.backoff import ceiling
from trackrelay.local.processes import stop_all as stop_processes

log = logging.getLogger(__name__)

Launch = Callable[[], subprocess.Popen[bytes]]


@dataclass
class Child:
    name: str
    launch: Launch
    process: subprocess.Popen[bytes] | None = None
    restarts: int = 0
    failures: int = 0
    """Exits in a row, each after a run shorter than ``stable_after``: the backoff's attempt."""
    started: float = 0.0
    restart_at: float | None = None
    last_exit: int | None = None
    history: list[str] = field(default_factory=list)

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None


class Supervisor:
    def __init__(
        self,
        backoff_base: float = 0.5,
        backoff_max: float = 10.0,
        stable_after: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backoff_base = backoff_base
        self.backoff_max = backoff_max
        self.stable_after = stable_after
        self.clock = clock
        self.children: dict[str, Child] = {}
        self.retiring: list[tuple[subprocess.Popen[bytes], float]] = []
        """Children stopped on purpose, not yet exited: (process, when to SIGKILL)."""
        self.events: list[str] = []
        """What happened, newest last: exits and restarts, for the status line and log."""

    def start(self, name: str, launch: Launch) -> Child:
        """Launch a child now (blocking until ``launch`` returns) and supervise it."""
        child = Child(name, launch)
        child.process = launch()
        child.started = self.clock()
        self.children[name] = child
        return child

    def _note(self, text: str) -> None:
        log.warning("supervisor: %s", text)
        self.events.append(text)
        del self.events[:-50]

    def check(self) -> list[Child]:
        """Reap exited children and schedule their restarts; the children due for one now."""
        self._reap_retired()
        now = self.clock()
        due = []
        for child in self.children.values():
            if child.restart_at is None and child.process is not None:
                code = child.process.poll()  # reaps: no zombie stays behind
                if code is None:
                    continue
                ran = now - child.started
                child.failures = child.failures + 1 if ran < self.stable_after else 1
                delay = ceiling(child.failures, self.backoff_base, self.backoff_max)
                child.last_exit = code
                child.restart_at = now + delay
                self._note(
                    f"{child.name} (pid {child.process.pid}) exited with {code} after "
                    f"{ran:.1f} s; restarting in {delay:.1f} s"
                )
            if child.restart_at is not None and now >= child.restart_at:
                due.append(child)
        return due

    async def relaunch(self, child: Child) -> None:
        child.restart_at = None
        try:
            child.process = await asyncio.to_thread(child.launch)
        except Exception as exc:  # a failed start is one more failure, retried later
            child.process = None
            child.failures += 1
            delay = ceiling(child.failures, self.backoff_base, self.backoff_max)
            child.restart_at = self.clock() + delay
            self._note(f"{child.name} did not start ({exc}); retrying in {delay:.1f} s")
            return
        child.started = self.clock()
        child.restarts += 1
        self._note(f"{child.name} restarted as pid {child.process.pid} (#{child.restarts})")

    async def run(self, stop: asyncio.Event, every: float = 0.2) -> None:
        """Watch until ``stop``: reap, restart what is due."""
        while not stop.is_set():
            for child in self.check():
                if child.name in self.children:
                    await self.relaunch(child)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=every)

    def retire(self, name: str, grace: float = 15.0) -> None:
        """Stop a child on purpose: SIGTERM now, SIGKILL after ``grace``; never restarted.

        Does not wait: ``check`` reaps it, so a forwarder finishing its last push
        does not hold up the controller's tick.
        """
        child = self.children.pop(name, None)
        if child is not None and child.process is not None and child.process.poll() is None:
            child.process.terminate()
            self.retiring.append((child.process, self.clock() + grace))

    def _reap_retired(self) -> None:
        now = self.clock()
        still = []
        for proc, deadline in self.retiring:
            if proc.poll() is not None:
                continue
            if now >= deadline:
                proc.kill()
            still.append((proc, deadline))
        self.retiring = still

    def names(self, prefix: str = "") -> list[str]:
        return [n for n in self.children if n.startswith(prefix)]

    def restarts(self) -> int:
        return sum(c.restarts for c in self.children.values())

    def status(self) -> dict[str, dict[str, Any]]:
        now = self.clock()
        return {
            c.name: {
                "pid": c.process.pid if c.process is not None else None,
                "running": c.running,
                "restarts": c.restarts,
                "up_seconds": round(now - c.started, 1) if c.running else 0,
                "last_exit": c.last_exit,
            }
            for c in self.children.values()
        }

    def stop_all(self, last: tuple[str, ...] = (), timeout: float = 15.0) -> None:
        """Stop every child, newest first, the ``last`` names after all others."""
        order = list(reversed(self.children.values()))
        first = [c.process for c in order if c.name not in last and c.process is not None]
        final = [c.process for c in order if c.name in last and c.process is not None]
        first += [proc for proc, _ in self.retiring]
        self.children.clear()
        self.retiring = []
        stop_processes(first, timeout)
        stop_processes(final, timeout)
