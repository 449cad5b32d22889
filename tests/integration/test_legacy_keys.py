"""A Redis upgraded in place: what it holds under the names before the hash tags moves to
the names now when a process checks the queue at start, and nothing is lost or doubled."""

from __future__ import annotations

from typing import Any

from redis.asyncio import Redis

from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.queue import legacy
from trackrelay.queue.client import check_queue_redis
from trackrelay.queue.keys import (
    AGG_FOLDS_KEY,
    AGG_WINDOW_PREFIX,
    AGG_WINDOWS_KEY,
    CONSUMER_GROUP,
    DLQ_STREAM,
    EVENT_FIELD,
    LEGACY_KEYS,
    STREAM,
)
from trackrelay.queue.quota import QueueQuota
from trackrelay.queue.rate_budget import get_budget

OLD_WINDOW = "trackrelay:agg:w:1700000000000"


async def old_layout(r: Redis, events: int) -> None:
    """What trackrelay 0.x left: events (one of them pending), a dead letter, an open
    window with exact and sketch counters, a fold token, the budget and its clock."""
    for n in range(events):
        await r.xadd("trackrelay:events", {EVENT_FIELD: f'{{"n": {n}}}'})
    await r.xgroup_create("trackrelay:events", CONSUMER_GROUP, id="0")
    await r.xreadgroup(CONSUMER_GROUP, "old-forwarder", {"trackrelay:events": ">"}, count=1)
    await r.xadd("trackrelay:events:dlq", {EVENT_FIELD: "{}", "reason": "rejected"})
    await r.zadd("trackrelay:agg:windows", {OLD_WINDOW: 1700000000000})
    await r.hset(OLD_WINDOW + ":7", "sku-a", "6 2")
    await r.hset(OLD_WINDOW + ":sk", "sku-b", 4)
    await r.hset(OLD_WINDOW + ":skv", "sku-b", "4 1 0")
    await r.hset("trackrelay:agg:folds", "batch-9", 10**13)
    await r.hset("trackrelay:quota:gauge", mapping={"bytes": 1, "at": 1})
    await r.set("trackrelay:budget", "250")
    await r.set("trackrelay:budget:tat", "1 250")


async def test_a_redis_of_the_old_names_is_moved_at_start_losing_nothing(
    redis_server: EmbeddedRedis,
) -> None:
    r = Redis.from_url(redis_server.url)
    await old_layout(r, events=1201)  # more than one batch
    await check_queue_redis(r)

    assert not await r.exists(*LEGACY_KEYS, OLD_WINDOW + ":7", OLD_WINDOW + ":skv")
    rows: Any = await r.xrange(STREAM)
    assert [f[EVENT_FIELD.encode()] for _, f in rows] == [
        f'{{"n": {n}}}'.encode() for n in range(1201)
    ]  # every event once, in order (the pending one too: at least once)
    assert await r.xlen(DLQ_STREAM) == 1
    new_window = AGG_WINDOW_PREFIX + "1700000000000"
    assert await r.zrange(AGG_WINDOWS_KEY, 0, -1, withscores=True) == [
        (new_window.encode(), 1700000000000.0)
    ]
    window = await QueueQuota(r, 2**20).read_window(new_window, 1700000000000, 100)
    assert {sku: v[1:] for sku, v in window.skus.items()} == {
        "sku-a": (6.0, 2),
        "sku-b": (4.0, 1),
    }
    assert await r.hexists(AGG_FOLDS_KEY, "batch-9")
    assert await get_budget(r) == 250.0
    assert await legacy.migrate(r) == 0  # nothing left to move
    await r.aclose()


async def test_a_budget_set_under_the_new_name_wins_over_the_old_one(
    redis_server: EmbeddedRedis,
) -> None:
    r = Redis.from_url(redis_server.url)
    await r.set("trackrelay:budget", "250")
    await r.set(LEGACY_KEYS["trackrelay:budget"], "900")
    assert await legacy.migrate(r) == 1
    assert await get_budget(r) == 900.0 and not await r.exists("trackrelay:budget")
    await r.aclose()
