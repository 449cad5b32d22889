"""Manage the dead-letter stream: list what is there and why, replay it, purge it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trackrelay.queue.handle import Queue
from trackrelay.queue.keys import (
    DLQ_DELIVERIES_FIELD,
    DLQ_REASON_FIELD,
    DLQ_SOURCE_ID_FIELD,
    DLQ_STREAM,
    EVENT_FIELD,
    STREAM,
)


@dataclass(frozen=True, slots=True)
class DeadLetter:
    id: str
    event: str
    reason: str
    deliveries: int
    source_id: str

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "reason": self.reason,
            "deliveries": self.deliveries,
            "source_id": self.source_id,
            "event": self.event,
        }


def _text(fields: dict[bytes, bytes], name: str) -> str:
    return fields.get(name.encode(), b"").decode("utf-8", "replace")


async def list_entries(redis: Queue, count: int = 100) -> list[DeadLetter]:
    rows: Any = await redis.xrange(DLQ_STREAM, count=count)
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
            )
        )
    return out


async def replay(redis: Queue, count: int | None = None) -> int:
    """Move dead letters back onto the main stream (after analytics was fixed)."""
    moved = 0
    while count is None or moved < count:
        batch = await list_entries(redis, min(500, (count - moved) if count else 500))
        if not batch:
            break
        pipe = redis.pipeline(transaction=True)
        for dead in batch:
            pipe.xadd(STREAM, {EVENT_FIELD: dead.event})
        pipe.xdel(DLQ_STREAM, *[d.id for d in batch])
        await pipe.execute()
        moved += len(batch)
    return moved


async def purge(redis: Queue) -> int:
    size = int(await redis.xlen(DLQ_STREAM))
    await redis.delete(DLQ_STREAM)
    return size
