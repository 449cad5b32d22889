"""How many shards the queue has, and which shard an event goes to.

The count is a fact of the queue, not of one process's settings: it is kept in Redis
(``keys.SHARDS_KEY``). A relay or forwarder started with ``queue_shards`` raises it,
never lowers it, and every process reads it: a relay never writes to a shard no
forwarder reads, and a shard once written to is read until it is empty.

Which shard an event goes to is ``events.shard_of``: by its order.
"""

from __future__ import annotations

from typing import Any

from trackrelay.events import MAX_SHARDS
from trackrelay.queue.handle import Queue
from trackrelay.queue.keys import SHARDS_KEY, Shard, first_shards

_RECORD = """#!lua flags=allow-oom
local n = tonumber(redis.call('GET', KEYS[1]) or '1')
local want = tonumber(ARGV[1])
if want > n then
  redis.call('SET', KEYS[1], want)
  n = want
end
return n
"""
"""Raise the recorded count to ARGV[1] if it is lower; the count now. ``allow-oom``: one
small key, so that a queue at ``maxmemory`` still tells every process what to read."""


def _count(raw: Any) -> int:
    n = int(raw)
    if not 1 <= n <= MAX_SHARDS:
        raise ValueError(f"{SHARDS_KEY} holds {n}: a queue has 1 to {MAX_SHARDS} shards")
    return n


async def record(redis: Queue, wanted: int) -> int:
    """Raise the queue's shard count to ``wanted`` (never lower it); the count in force."""
    return _count(await redis.eval(_RECORD, 1, SHARDS_KEY, wanted))


async def recorded(redis: Queue) -> int:
    """The queue's shard count, read only (1 if none was recorded)."""
    raw = await redis.get(SHARDS_KEY)
    return 1 if raw is None else _count(raw)


async def current(redis: Queue) -> list[Shard]:
    """The queue's shards as recorded: what an observer sums its figures over."""
    return first_shards(await recorded(redis))
