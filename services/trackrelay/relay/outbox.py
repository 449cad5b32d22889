"""SQL for the outbox: relay claims under a lease, and the outbox's own shedding.

A relay claims a batch under a lease token (several relays never publish one
row at the same time; an expired claim is taken over), deletes it once it is
in the stream, and when the queue is full thins or folds unclaimed rows.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from sqlalchemy import BigInteger, any_, bindparam, delete, func, insert, or_, select, update
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncEngine

from trackrelay.control.lease import Lease
from trackrelay.control.shedding import (
    Line,
    aggregate_event,
    fold_lines,
    resampled_weight,
)
from trackrelay.db.schema import outbox
from trackrelay.events import countable


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    event_id: str
    payload: str
    fold_token: str | None = None
    created_at: float = 0.0
    """Its order's moment (epoch seconds)."""


async def claim_outbox(
    engine: AsyncEngine, lease: Lease, limit: int, now: float
) -> list[OutboxRow]:
    """Lease up to ``limit`` free rows (oldest first) to ``lease.token``.

    PostgreSQL: ``FOR UPDATE SKIP LOCKED`` lets concurrent relays claim disjoint
    batches without waiting; SQLite serialises writers, and the same lease
    condition (the SQL form of ``control.lease.is_free``) keeps claims disjoint.
    """
    free = or_(outbox.c.lease_expires_at.is_(None), outbox.c.lease_expires_at <= now)
    candidates = (
        select(outbox.c.id)
        .where(free)
        .order_by(outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )
    stmt = (
        update(outbox)
        .where(outbox.c.id.in_(candidates.scalar_subquery()))
        .where(free)
        .values(lease_token=lease.token, lease_expires_at=lease.expires_at)
        .returning(
            outbox.c.id,
            outbox.c.event_id,
            outbox.c.payload,
            outbox.c.fold_token,
            outbox.c.created_at,
        )
    )
    async with engine.begin() as conn:
        rows = (await conn.execute(stmt)).all()
    claimed = [
        OutboxRow(r.id, r.event_id, r.payload, r.fold_token, float(r.created_at)) for r in rows
    ]
    claimed.sort(key=lambda r: r.id)
    return claimed


def _among(ids: Sequence[int], dialect: str) -> Any:
    """``outbox.id`` among ``ids``: one array parameter on PostgreSQL (``= ANY``), where an
    expanded ``IN`` of a batch costs the relay more CPU in compiling than the delete takes."""
    if dialect == "postgresql":
        return outbox.c.id == any_(bindparam("ids", list(ids), type_=ARRAY(BigInteger)))
    return outbox.c.id.in_(ids)


async def delete_published(engine: AsyncEngine, token: str, ids: Sequence[int]) -> int:
    """Remove rows that Redis accepted; only while this claim still holds them."""
    if not ids:
        return 0
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(outbox)
            .where(_among(ids, engine.dialect.name))
            .where(outbox.c.lease_token == token)
        )
    return int(result.rowcount)


async def release_claim(engine: AsyncEngine, token: str) -> None:
    """Give rows back at once (e.g. Redis refused them) so any relay may retry them."""
    async with engine.begin() as conn:
        await conn.execute(
            update(outbox)
            .where(outbox.c.lease_token == token)
            .values(lease_token=None, lease_expires_at=None)
        )


@dataclass(frozen=True, slots=True)
class OutboxStats:
    depth: int
    oldest_created_at: float | None

    def lag(self, now: float | None = None) -> float:
        if self.oldest_created_at is None:
            return 0.0
        return max(0.0, (now if now is not None else time.time()) - self.oldest_created_at)


async def outbox_stats(engine: AsyncEngine) -> OutboxStats:
    async with engine.connect() as conn:
        row = (await conn.execute(select(func.count(), func.min(outbox.c.created_at)))).one()
    return OutboxStats(depth=int(row[0]), oldest_created_at=row[1])


async def mark_folded(engine: AsyncEngine, token: str, ids: Sequence[int]) -> set[int]:
    """Record, before folding, that these claimed rows go into the fold ``token``.

    Returns the ids marked: only rows this claim still holds (a relay that stalled
    past its lease may have lost some to another relay, and must not fold those)."""
    if not ids:
        return set()
    async with engine.begin() as conn:
        result = await conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids))
            .where(outbox.c.lease_token == token)
            .values(fold_token=token)
            .returning(outbox.c.id)
        )
        return {int(i) for i in result.scalars()}


# --- the outbox quota: shedding rows no relay holds ---------------------------


def _unclaimed(now: float) -> Any:
    return or_(outbox.c.lease_expires_at.is_(None), outbox.c.lease_expires_at <= now)


async def count_outbox(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(outbox))).scalar_one())


async def remove_outbox(
    engine: AsyncEngine, n: int, *, newest: bool, now: float
) -> tuple[int, int]:
    """Delete up to ``n`` rows no relay holds: the oldest, or the newest (``drop_new``).

    Returns (rows deleted, order lines they stood for: an aggregate counts its lines).
    """
    if n <= 0:
        return 0, 0
    order = outbox.c.id.desc() if newest else outbox.c.id
    victims = (
        select(outbox.c.id)
        .where(_unclaimed(now))
        .order_by(order)
        .limit(n)
        .with_for_update(skip_locked=True)
    )
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(outbox)
            .where(outbox.c.id.in_(victims.scalar_subquery()))
            .returning(outbox.c.payload)
        )
        payloads = [row.payload for row in result]
    lines = sum(ev.lines if (ev := countable(p)) is not None else 1 for p in payloads)
    return len(payloads), lines


def _thinnable(now: float, after_id: int, limit: int) -> Any:
    return (
        select(outbox.c.id, outbox.c.event_id, outbox.c.payload, outbox.c.created_at)
        .where(_unclaimed(now))
        .where(outbox.c.fold_token.is_(None))
        .where(outbox.c.id > after_id)
        .order_by(outbox.c.id)
        .limit(limit)
        .with_for_update(skip_locked=True)
    )


async def sample_outbox(
    engine: AsyncEngine, p: float, after_id: int, limit: int, now: float
) -> tuple[int, int]:
    """Thin up to ``limit`` rows after ``after_id`` to keep probability ``p``.

    Returns (the last row id looked at, or ``after_id`` when none; rows shed).
    Each row is decided by its event id (``resampled_weight``): kept rows get
    weight ``1 / p``, so weighted sums stay unbiased; aggregates are kept as is.
    """
    shed: list[int] = []
    last = after_id
    async with engine.begin() as conn:
        rows = (await conn.execute(_thinnable(now, after_id, limit))).all()
        reweighted = []
        for row in rows:
            last = max(last, int(row.id))
            ev = countable(row.payload)
            if ev is None or ev.lines != 1:
                continue
            weight = resampled_weight(ev.event_id, ev.weight, p)
            if weight is None:
                shed.append(row.id)
            elif weight != ev.weight:
                reweighted.append({"rid": row.id, "new": replace(ev, weight=weight).to_json()})
        # Rows read above may have been claimed since (SQLite reads outside the write
        # transaction): every write checks again that no relay holds the row.
        gone = 0
        if shed:
            result = await conn.execute(
                delete(outbox).where(outbox.c.id.in_(shed)).where(_unclaimed(now))
            )
            gone = int(result.rowcount)
        if reweighted:
            await conn.execute(
                update(outbox)
                .where(outbox.c.id == bindparam("rid"))
                .where(_unclaimed(now))
                .values(payload=bindparam("new")),
                reweighted,
            )
    return last, gone


def fold_name(first_event_id: str) -> str:
    """The name of an outbox fold, from the event id of its first row: unique as event
    ids are, and short whatever that id is (an aggregate's own id may be folded again).

    Not the row id: a store may hand out row ids again once the outbox is empty
    (SQLite's ``INTEGER PRIMARY KEY`` without ``AUTOINCREMENT`` does), and a later
    fold named as an earlier one would send aggregates analytics drops as duplicates.
    """
    return "o" + hashlib.blake2b(first_event_id.encode(), digest_size=10).hexdigest()


async def fold_outbox(engine: AsyncEngine, limit: int, now: float) -> tuple[int, int, int]:
    """Fold up to ``limit`` rows into one aggregate row per SKU, in one transaction.

    Exact: per-SKU sums of ``qty * weight`` and of ``lines`` are what the rows
    held. The aggregate's id names the fold by its first row's event id
    (``fold_name``), so it is unique across outbox generations.
    Returns (rows folded, aggregate rows written, order lines folded); nothing
    happens when folding would not shrink the outbox.
    """
    async with engine.begin() as conn:
        rows = (await conn.execute(_thinnable(now, 0, limit))).all()
        decoded = [(row, countable(row.payload)) for row in rows]
        events = [(row, ev) for row, ev in decoded if ev is not None]
        totals = fold_lines(
            [Line(ev.event_id, ev.sku, ev.qty, ev.weight, ev.lines) for _, ev in events]
        )
        if len(totals) >= len(events):
            return 0, 0, 0
        window = fold_name(events[0][0].event_id)
        stamp = min(ev.occurred_at for _, ev in events)
        created = min(float(row.created_at) for row, _ in events)
        aggregates = []
        for sku, (total, lines) in totals.items():
            agg = aggregate_event(sku, window, total, lines, stamp)
            aggregates.append(
                {"event_id": agg.event_id, "payload": agg.to_json(), "created_at": created}
            )
        ids = [row.id for row, _ in events]
        result = await conn.execute(
            delete(outbox)
            .where(outbox.c.id.in_(ids))
            .where(_unclaimed(now))
            .where(outbox.c.fold_token.is_(None))
        )
        if result.rowcount != len(ids):
            # A relay claimed some of them after they were read: fold nothing this time.
            await conn.rollback()
            return 0, 0, 0
        await conn.execute(insert(outbox), aggregates)
    return len(events), len(aggregates), sum(lines for _, lines in totals.values())
