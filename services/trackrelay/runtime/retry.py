"""The one retry pacing every loop uses: exponential backoff with full jitter, stoppable waits.

The relay, the forwarder's lanes and its held batches all count failures in a
``Backoff`` and wait with ``pause``, so a stop signal ends any wait at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import Awaitable, Callable

from trackrelay.control import backoff
from trackrelay.runtime.errors import StartupError

log = logging.getLogger(__name__)


class Backoff:
    """Consecutive failures of one loop and the jittered wait each one earns."""

    def __init__(self, base: float, cap: float, rng: random.Random | None = None) -> None:
        self.base = base
        self.cap = cap
        self.rng = rng
        self.failures = 0

    def failed(self) -> float:
        """Count a failure; the wait before the next attempt (full jitter, capped)."""
        self.failures += 1
        return backoff.full_jitter(self.failures, self.base, self.cap, self.rng)

    def succeeded(self) -> None:
        self.failures = 0


async def pause(stop: asyncio.Event, seconds: float) -> bool:
    """Wait ``seconds`` unless ``stop`` is set first; True when stopping."""
    if stop.is_set():
        return True
    if seconds <= 0:
        await asyncio.sleep(0)
        return stop.is_set()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), timeout=seconds)
    return stop.is_set()


async def first_set(*events: asyncio.Event, timeout: float | None = None) -> None:
    """Until any of ``events`` is set, or ``timeout`` seconds pass (None: no limit)."""
    if any(event.is_set() for event in events):
        return
    waits = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waits, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for wait in waits:
            wait.cancel()


async def until_up(attempt: Callable[[], Awaitable[None]], what: str, wait: float) -> None:
    """Run ``attempt`` until it does not raise ``StartupError``, for ``wait`` seconds at most.

    A service started beside the database or the Redis it needs (a fresh install: all pods
    at once) waits for them instead of exiting into a crash loop. Each failed try logs one
    line of progress; past ``wait`` the last error is raised. ``wait`` 0: one try.
    """
    started = time.monotonic()
    tries = 0
    while True:
        tries += 1
        try:
            await attempt()
            if tries > 1:
                log.info("%s answered after %.0f s", what, time.monotonic() - started)
            return
        except StartupError as exc:
            elapsed = time.monotonic() - started
            delay = min(backoff.ceiling(tries, 0.5, 5.0), wait - elapsed)
            if delay <= 0:
                raise
            log.warning(
                "waiting for %s (try %d, %.0f s of %.0f s): %s", what, tries, elapsed, wait, exc
            )
            await asyncio.sleep(delay)
