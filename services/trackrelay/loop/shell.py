"""The control loop: observe -> ``decide`` -> act, on an interval (local mode and the operator).

Observation and actuation are passed in; the loop keeps the controller's state,
the last decision and observation, and a log of the reasons for every change.
A failed observation becomes a held decision (fail static); a failed action is
logged and retried on the next tick, which decides again from fresh data.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import asdict
from typing import Any

from trackrelay.control.controller import (
    Decision,
    Observation,
    Reason,
    ReasonKind,
    Spec,
    State,
    decide,
    describe,
    initial_state,
)
from trackrelay.runtime.errors import brief

log = logging.getLogger(__name__)

Observe = Callable[[], Awaitable[Observation]]
Act = Callable[[Decision], Awaitable[None]]

RESUMED = Reason(ReasonKind.OBSERVING, "observing again: deciding from fresh data")


def reason_log(entries: Iterable[tuple[float, Reason]]) -> list[dict[str, Any]]:
    """Recorded reasons as JSON-able records ``{"at", "kind", "text"}`` (status, timeline)."""
    return [{"at": at, "kind": r.kind.value, "text": r.text} for at, r in entries]


class ControlLoop:
    def __init__(
        self,
        spec: Spec,
        observe: Observe,
        act: Act,
        interval: float = 1.0,
        state: State | None = None,
        clock: Callable[[], float] = time.time,
        keep: int = 2000,
    ) -> None:
        problems = spec.problems()
        if problems:
            raise ValueError("controller spec: " + "; ".join(problems))
        self.spec = spec
        self.observe = observe
        self.act = act
        self.interval = interval
        self.state = state or initial_state(spec)
        self.clock = clock
        self.decision: Decision | None = None
        self.observation: Observation | None = None
        self.reasons: collections.deque[tuple[float, Reason]] = collections.deque(maxlen=keep)
        """Every change's reason with its time (wall clock), newest last."""
        self.ticks = 0
        self.recorded = 0
        """Reasons recorded since the start (``reasons`` keeps only the latest)."""

    async def tick(self) -> Decision:
        now = self.clock()
        missing = "no observation"
        try:
            self.observation = await self.observe()
        except Exception as exc:  # any failure to observe means: hold, and say why
            self.observation = None
            missing = f"cannot observe ({brief(exc)})"
        decision, self.state = decide(self.spec, self.observation, self.state, now, missing)
        held_before = self.decision is not None and self.decision.held
        self.decision = decision
        self.ticks += 1
        if decision.held:
            if not held_before:
                self._record(now, decision.reasons[0])
            return decision
        if held_before:
            self._record(now, RESUMED)
        for reason in decision.reasons:
            self._record(now, reason)
        try:
            await self.act(decision)
        except Exception as exc:  # the next tick decides and acts again
            self._record(now, Reason(ReasonKind.ACTION_FAILED, f"could not act: {brief(exc)}"))
        return decision

    def reasons_since(self, recorded: int) -> list[tuple[float, Reason]]:
        """The reasons recorded after the first ``recorded`` (a previous ``self.recorded``)."""
        fresh = self.recorded - recorded
        return list(self.reasons)[-fresh:] if fresh > 0 else []

    def _record(self, now: float, reason: Reason) -> None:
        log.info("controller: %s", reason.text)
        self.reasons.append((now, reason))
        self.recorded += 1

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            await self.tick()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval)

    def status(self, reasons: int = 10) -> dict[str, Any]:
        """The last decision, observation and reasons as JSON-able data."""
        d = self.decision
        decision = None
        if d is not None:
            decision = {
                "budget": round(d.budget, 1),
                "replicas": d.replicas,
                "usable_replicas": d.usable_replicas,
                "per_replica": round(d.per_replica, 1),
                "shedding": describe(d.shedding),
                "policy": d.shedding.policy.value,
                "p": d.shedding.p,
                "healthy": d.health.healthy,
                "health": d.health.why,
                "backlog": d.backlog,
                "held": d.held,
                "last_good": None if d.last_good is None else round(d.last_good, 1),
                "delivered": None if d.delivered is None else round(d.delivered, 1),
            }
        return {
            "at": self.clock(),
            "decision": decision,
            "observation": None if self.observation is None else asdict(self.observation),
            "reasons": reason_log(list(self.reasons)[-reasons:]),
        }
