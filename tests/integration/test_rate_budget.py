"""The shared rate budget's clock on a real Redis: slots, and a change of budget."""

from __future__ import annotations

import asyncio
import itertools
import time

import pytest

from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.queue import rate_budget
from trackrelay.queue.client import connect


def test_slots_follow_one_another_at_the_budget(redis_server: EmbeddedRedis) -> None:
    async def run() -> list[tuple[float, float]]:
        redis = connect(redis_server.url)
        try:
            await rate_budget.set_budget(redis, 100)
            starts = []
            for _ in range(4):
                asked = time.monotonic()
                wait, _ = await rate_budget.reserve(redis, 50)
                # The slot begins ``wait`` after Redis ran the script: between these two.
                starts.append((asked + wait, time.monotonic() + wait))
            return starts
        finally:
            await redis.aclose()

    starts = asyncio.run(run())
    # 50 events at 100 ev/s: each slot begins half a second after the one before,
    # however long each call took.
    for (low0, high0), (low1, high1) in itertools.pairwise(starts):
        assert low1 - high0 - 1e-3 <= 0.5 <= high1 - low0 + 1e-3


def test_a_raised_budget_rescales_the_time_reserved_at_the_lower_one(
    redis_server: EmbeddedRedis,
) -> None:
    """8 pushes of 60 events at 10 ev/s reserve 48 s; raised to 400 ev/s, the same events
    take 1.2 s, and the next push waits about that long, not 48 s."""

    async def run() -> tuple[float, float]:
        redis = connect(redis_server.url)
        try:
            await rate_budget.set_budget(redis, 10)
            for _ in range(8):
                await rate_budget.reserve(redis, 60)
            low, _ = await rate_budget.reserve(redis, 1)
            await rate_budget.set_budget(redis, 400)
            high, rate = await rate_budget.reserve(redis, 1)
            assert rate == 400
            return low, high
        finally:
            await redis.aclose()

    low, high = asyncio.run(run())
    assert low == pytest.approx(48, abs=1)
    assert high == pytest.approx(48 * 10 / 400, abs=0.5)
