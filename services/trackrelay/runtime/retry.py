"""The one retry pacing every loop uses: exponential backoff with full jitter, stoppable waits.

The relay, the forwarder's lanes and its held batches all count failures in a
``Backoff`` and wait with ``pause``, so a stop signal ends any wait at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import random

from trackrelay.control import backoff


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
