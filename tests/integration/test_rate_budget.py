"""The shared rate budget's clock on a real Redis: slots, and a change of budget."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time

import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.integration.conftest import add_events
from trackrelay.config.settings import ForwarderSettings
from trackrelay.control.push_outcome import Outcome, PushResult
from trackrelay.forwarder.worker import Forwarder
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.queue import rate_budget
from trackrelay.queue.client import connect
from trackrelay.queue.keys import BUDGET_KEY


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


async def test_a_raised_budget_ends_a_long_slot_wait_within_two_seconds(
    redis_server: EmbeddedRedis,
) -> None:
    """A budget far too small (written straight to Redis, as an old release allowed) gives
    each lane a slot minutes away; raised, delivery resumes within two seconds, not then."""
    add_events(redis_server.url, 50)
    r = AsyncRedis.from_url(redis_server.url)
    await r.set(BUDGET_KEY, "0.01")  # one event every 100 s
    accepted: list[float] = []
    all_in = asyncio.Event()

    class Sink:
        async def push(self, raw: list[bytes], deadline: float | None = None) -> PushResult:
            accepted.extend(time.monotonic() for _ in raw)
            if len(accepted) >= 50:
                all_in.set()
            return PushResult(Outcome.ACCEPTED, status=200)

    settings = ForwarderSettings(batch_size=10, block_ms=100, concurrency=4)
    stop = asyncio.Event()
    task = asyncio.create_task(Forwarder(r, Sink(), settings, consumer="solo").run(stop))
    try:
        await asyncio.sleep(2.0)  # every lane now waits for a slot 100 s or more away
        before = len(accepted)
        assert before < 50
        await r.set(BUDGET_KEY, "10000")
        raised = time.monotonic()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(all_in.wait(), timeout=10)
    finally:
        stop.set()
        await task
        await r.aclose()
    assert len(accepted) == 50
    first_after = min(t for t in accepted[before:])
    assert first_after - raised <= 2.0, "the rise took effect after two seconds"
