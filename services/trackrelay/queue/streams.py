"""The Redis Stream adapter: every XADD, XREADGROUP, XACK, XAUTOCLAIM trackrelay issues.

Thin I/O over redis-py; names come from ``keys``, each call on one shard of the
queue. Entries are removed only after they are acknowledged (XACK + XDEL in one
transaction), never by trimming that could drop entries still pending.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import OutOfMemoryError, ResponseError

from trackrelay.queue.handle import Queue
from trackrelay.queue.keys import (
    CONSUMER_GROUP,
    DLQ_DELIVERIES_FIELD,
    DLQ_REASON_FIELD,
    DLQ_SOURCE_ID_FIELD,
    EVENT_FIELD,
    Shard,
)
from trackrelay.queue.replicas import Replication

_EVENT_KEY = EVENT_FIELD.encode()


@dataclass(frozen=True, slots=True)
class Entry:
    """One stream entry: its id and the event's raw JSON (not decoded here)."""

    id: str
    raw: bytes | None


DeadLetterEntry = tuple[Entry, str, int]
"""An entry bound for the DLQ, with the reason and its delivery count."""


def _text(value: Any) -> str:
    """A stream id as str, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)


def _entries(raw: Any) -> list[Entry]:
    out = []
    for entry_id, fields in raw or []:
        out.append(Entry(_text(entry_id), (fields or {}).get(_EVENT_KEY)))
    return out


_PUBLISH = """#!lua
local ids = {}
for i = 1, #ARGV do ids[i] = redis.call('XADD', KEYS[1], '*', ARGV_FIELD, ARGV[i]) end
return ids
""".replace("ARGV_FIELD", repr(EVENT_FIELD))
"""XADD every payload, in order, in one script: one command a batch, not one a payload.
Without ``allow-oom``: at ``maxmemory`` Redis refuses it before it adds anything."""


async def publish(
    redis: Queue, shard: Shard, payloads: Sequence[str], replication: Replication | None = None
) -> list[Any]:
    """XADD each payload; per payload, the new id or the exception.

    One script a batch rather than a pipeline of XADDs: a cluster client spends about as
    much Python on each command of a pipeline as the relay spends on an event, and one
    script has a single key to route. The batch is added whole or refused whole (at
    ``maxmemory``, or any error reply: every payload then carries it, and its rows stay
    in the outbox for the next round). With ``replication``, it returns once the replicas
    have the batch (``queue.replicas``)."""
    if not payloads:
        return []
    try:
        ids: Any = await redis.eval(_PUBLISH, 1, shard.stream, *payloads)
    except ResponseError as exc:
        return [exc] * len(payloads)
    if replication is not None:
        await replication.wait(redis, shard)
    return list(ids)


async def ensure_group(redis: Queue, shard: Shard) -> None:
    """Create the consumer group (and the stream) if missing; reading starts at the beginning."""
    try:
        await redis.xgroup_create(shard.stream, CONSUMER_GROUP, id="0", mkstream=True)
    except OutOfMemoryError:
        # At maxmemory Redis refuses XGROUP CREATE before it looks: a group that is
        # there already is all the forwarders need to drain the stream.
        if not await _group_exists(redis, shard):
            raise
    except ResponseError as exc:
        if "BUSYGROUP" not in str(exc):
            raise


async def _group_exists(redis: Queue, shard: Shard) -> bool:
    try:
        groups = await redis.xinfo_groups(shard.stream)
    except ResponseError:  # no stream
        return False
    return any(_text(g["name"]) == CONSUMER_GROUP for g in groups)


async def read(
    redis: Queue, shard: Shard, consumer: str, cursor: str, count: int, block_ms: int | None
) -> list[Entry]:
    """XREADGROUP: ``cursor`` "0" re-reads this consumer's pending entries, ">" new ones."""
    reply: Any = await redis.xreadgroup(
        CONSUMER_GROUP, consumer, {shard.stream: cursor}, count=count, block=block_ms
    )
    if not reply:
        return []
    return _entries(reply[0][1])


async def autoclaim(
    redis: Queue, shard: Shard, consumer: str, min_idle_s: float, count: int, start: str = "0-0"
) -> tuple[str, list[Entry]]:
    """Take over entries idle longer than ``min_idle_s`` (their consumer is presumed dead).

    Returns Redis's cursor with the entries: continue the next call from it (Redis
    scans at most ``count`` x 10 pending entries per call), "0-0" when a scan is done.
    """
    reply = await redis.xautoclaim(
        shard.stream, CONSUMER_GROUP, consumer, int(min_idle_s * 1000), start_id=start, count=count
    )
    return _text(reply[0]), _entries(reply[1])


_OWNED = """#!lua flags=allow-oom
local owned = {}
for i = 4, #ARGV do
  local row = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if row[1] and row[1][2] == ARGV[2] then
    owned[#owned + 1] = ARGV[i]
  end
end
for i = 1, #owned, 200 do
  local args = {KEYS[1], ARGV[1], ARGV[2], '0'}
  for j = i, math.min(i + 199, #owned) do
    args[#args + 1] = owned[j]
  end
  if ARGV[3] ~= '' then
    args[#args + 1] = 'RETRYCOUNT'
    args[#args + 1] = ARGV[3]
  end
  args[#args + 1] = 'JUSTID'
  redis.call('XCLAIM', unpack(args))
end
return owned
"""
"""Of the ids in ARGV[4...], the entries the consumer ARGV[2] owns, re-claimed by it (idle
time reset; with ARGV[3], the delivery count set to it). Only XPENDING and XCLAIM, so it
runs in a full Redis too."""


async def _owned(
    redis: Queue, shard: Shard, consumer: str, ids: Sequence[str], count: str
) -> set[str]:
    if not ids:
        return set()
    owned = await redis.eval(_OWNED, 1, shard.stream, CONSUMER_GROUP, consumer, count, *ids)
    return {_text(i) for i in owned or []}


async def refresh_owned(redis: Queue, shard: Shard, consumer: str, ids: Sequence[str]) -> set[str]:
    """Of ``ids``, the entries ``consumer`` still owns, with their idle time reset to zero.

    One atomic script: for each id, XPENDING names its owner; only entries this
    consumer owns are re-claimed (XCLAIM JUSTID: idle reset, delivery count kept).
    An entry another consumer took over stays theirs and is left out of the answer.
    (A bare ``XCLAIM ... 0`` would skip that check and steal the entry back.)
    """
    return await _owned(redis, shard, consumer, ids, "")


async def survived(redis: Queue, shard: Shard, consumer: str, ids: Sequence[str]) -> int:
    """Set the delivery count of the entries ``consumer`` still owns back to 1.

    A push of them was answered (refused, failed, timed out) and the forwarder lived:
    they did not crash it. The delivery count then only grows with deliveries that
    ended without an answer, the crashes the ``max_deliveries`` rule is for; ownership
    moving from forwarder to forwarder through an outage does not dead-letter healthy
    events. Entries another consumer took over are left alone (the same check as
    ``refresh_owned``). Returns how many were reset."""
    return len(await _owned(redis, shard, consumer, ids, "1"))


async def deliveries(
    redis: Queue, shard: Shard, consumer: str, ids: Sequence[str]
) -> dict[str, int]:
    """How many times each pending entry was delivered (XPENDING per id, one pipeline).

    Exact for every id, however many other entries this consumer holds between them.
    """
    if not ids:
        return {}
    pipe = redis.pipeline(transaction=False)
    for ident in ids:
        pipe.xpending_range(
            shard.stream, CONSUMER_GROUP, min=ident, max=ident, count=1, consumername=consumer
        )
    out = {}
    for ident, rows in zip(ids, await pipe.execute(), strict=True):
        if rows:
            out[ident] = int(rows[0]["times_delivered"])
    return out


_ACK_DELETE = """#!lua flags=allow-oom
local group = ARGV[1]
for i = 2, #ARGV, 200 do
  local ids = {unpack(ARGV, i, math.min(i + 199, #ARGV))}
  redis.call('XACK', KEYS[1], group, unpack(ids))
  redis.call('XDEL', KEYS[1], unpack(ids))
end
return 1
"""
"""XACK then XDEL, atomically. A script, not MULTI: at ``maxmemory`` Redis refuses to queue
any command in a transaction, while these two only free memory (``allow-oom``). The group
is an argument, not a key: Redis checks a user's key patterns against every key passed."""


async def ack_delete(redis: Queue, shard: Shard, ids: Sequence[str]) -> None:
    """Acknowledge and delete entries analytics accepted (or that moved to the DLQ)."""
    if not ids:
        return
    await redis.eval(_ACK_DELETE, 1, shard.stream, CONSUMER_GROUP, *ids)


async def dead_letter(redis: Queue, shard: Shard, entries: Sequence[DeadLetterEntry]) -> None:
    """Move entries to the DLQ with their reason, then ack and delete them on the main stream."""
    if not entries:
        return
    pipe = redis.pipeline(transaction=True)
    for entry, reason, delivered in entries:
        pipe.xadd(
            shard.dlq,
            {
                EVENT_FIELD: entry.raw or b"",
                DLQ_REASON_FIELD: reason,
                DLQ_DELIVERIES_FIELD: str(delivered),
                DLQ_SOURCE_ID_FIELD: entry.id,
            },
        )
    ids = [e.id for e, _, _ in entries]
    pipe.xack(shard.stream, CONSUMER_GROUP, *ids)
    pipe.xdel(shard.stream, *ids)
    await pipe.execute()


@dataclass(frozen=True, slots=True)
class QueueStats:
    length: int
    pending: int
    dlq: int

    def __add__(self, other: QueueStats) -> QueueStats:
        return QueueStats(
            self.length + other.length, self.pending + other.pending, self.dlq + other.dlq
        )


async def shard_stats(redis: Queue, shard: Shard) -> QueueStats:
    """One shard's stream length, pending entries and DLQ length."""
    pipe = redis.pipeline(transaction=False)
    pipe.xlen(shard.stream)
    pipe.xlen(shard.dlq)
    length, dlq = await pipe.execute()
    try:
        summary = await redis.xpending(shard.stream, CONSUMER_GROUP)
        pending = int(summary["pending"])
    except ResponseError:  # no group yet
        pending = 0
    return QueueStats(int(length), pending, int(dlq))


async def queue_stats(redis: Queue, shards: Sequence[Shard]) -> QueueStats:
    """The queue's figures summed over ``shards`` (backlog is summed lag: a split backlog
    is as deep as its total)."""
    total = QueueStats(0, 0, 0)
    for one in await asyncio.gather(*(shard_stats(redis, s) for s in shards)):
        total += one
    return total


async def unread(redis: Queue, shards: Sequence[Shard]) -> int:
    """Stream entries no forwarder has read yet (length minus pending)."""
    stats = await queue_stats(redis, shards)
    return max(0, stats.length - stats.pending)


async def length(redis: Queue, shard: Shard) -> int:
    """Entries in a shard's stream, read or not."""
    return int(await redis.xlen(shard.stream))
