"""Manage the dead-letter streams (one a shard): list what is there and why, replay it, purge it."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from trackrelay.queue.handle import Queue
from trackrelay.queue.keys import (
    DLQ_DELIVERIES_FIELD,
    DLQ_REASON_FIELD,
    DLQ_SOURCE_ID_FIELD,
    EVENT_FIELD,
    Shard,
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    event: str
    reason: str
    deliveries: int
    source_id: str
    shard: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "shard": self.shard,
            "reason": self.reason,
            "deliveries": self.deliveries,
            "source_id": self.source_id,
            "event": self.event,
        }


def _text(fields: dict[bytes, bytes], name: str) -> str:
    return fields.get(name.encode(), b"").decode("utf-8", "replace")


async def _list(redis: Queue, shard: Shard, count: int) -> list[DeadLetter]:
    rows: Any = await redis.xrange(shard.dlq, count=count)
    out = []
    for entry_id, fields in rows:
        deliveries = _text(fields, DLQ_DELIVERIES_FIELD)
        out.append(
            DeadLetter(
                id=entry_id.decode(),
                event=_text(fields, EVENT_FIELD),
                reason=_text(fields, DLQ_REASON_FIELD),
                deliveries=int(deliveries) if deliveries.isdigit() else 0,
                source_id=_text(fields, DLQ_SOURCE_ID_FIELD),
                shard=shard.number,
            )
        )
    return out


async def list_entries(redis: Queue, shards: Sequence[Shard], count: int = 100) -> list[DeadLetter]:
    """Up to ``count`` dead letters, shard by shard, oldest first in each."""
    out: list[DeadLetter] = []
    for shard in shards:
        if len(out) >= count:
            break
        out += await _list(redis, shard, count - len(out))
    return out


async def replay(redis: Queue, shards: Sequence[Shard], count: int | None = None) -> int:
    """Move dead letters back onto their shard's stream (after analytics was fixed)."""
    moved = 0
    for shard in shards:
        while count is None or moved < count:
            batch = await _list(redis, shard, min(500, (count - moved) if count else 500))
            if not batch:
                break
            pipe = redis.pipeline(transaction=True)
            for dead in batch:
                pipe.xadd(shard.stream, {EVENT_FIELD: dead.event})
            pipe.xdel(shard.dlq, *[d.id for d in batch])
            await pipe.execute()
            moved += len(batch)
    return moved


async def purge(redis: Queue, shards: Sequence[Shard]) -> int:
    size = 0
    for shard in shards:
        size += int(await redis.xlen(shard.dlq))
        await redis.delete(shard.dlq)
    return size
