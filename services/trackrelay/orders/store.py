"""The order store adapter: SQL for orders, idempotency keys and the outbox.

Every function takes the engine as a parameter; the decisions (lease rules,
event ids) come from pure modules. An order, its lines and one outbox row per
line are written in one transaction, so an accepted order always has its events.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, delete, event, func, insert, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from trackrelay.control.lease import Lease
from trackrelay.control.shedding import (
    Line,
    aggregate_event,
    fold_lines,
    resampled_weight,
)
from trackrelay.events import Event, countable, event_id_for, rfc3339
from trackrelay.orders.models import OrderLine, OrderRequest, OrderResponse
from trackrelay.orders.pg_writer import ORDER_WITH_OUTBOX, PgOrderWriter
from trackrelay.orders.schema import order_lines, orders, outbox
from trackrelay.settings import sqlite_file


class IdempotencyConflict(Exception):
    """The idempotency key was already used for a different request body."""


def make_engine(database_url: str, pool_size: int = 20) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so readers never block writers.

    Durable: a 201 promises the order survives a crash, so SQLite commits with
    ``synchronous=FULL`` (WAL synced at every commit). Parameters are hidden
    from errors and logs: they hold customer data.
    """
    if database_url.startswith("sqlite"):
        _use_wal(database_url)
        engine = create_async_engine(
            database_url, connect_args={"timeout": 30}, hide_parameters=True
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    # No pre-ping (a round trip per request): a dead connection fails its request
    # with 503 and the pool drops it, so the next request gets a fresh one. No
    # overflow: overflow connections are closed on return, and opening connections
    # (and preparing statements again) under load costs more than waiting for one.
    return create_async_engine(
        database_url,
        pool_size=pool_size,
        max_overflow=0,
        hide_parameters=True,
        connect_args={"timeout": 5},
    )


def _use_wal(database_url: str) -> None:
    """Put a SQLite file in WAL mode (readers never block the writer), once, up front.

    WAL is a property of the file. Switching from many fresh pool connections at
    once fails with "database is locked", so it is done here, before any pool use.
    """
    path = sqlite_file(database_url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


def new_order_id() -> str:
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class CreateResult:
    order: OrderResponse
    created: bool


async def create_order(
    engine: AsyncEngine,
    request: OrderRequest,
    idempotency_key: str | None,
    *,
    writer: PgOrderWriter | None = None,
    now: datetime | None = None,
) -> CreateResult:
    """Store an order with its outbox rows; a repeated idempotency key returns the first order.

    Raises ``IdempotencyConflict`` when the key was used for a different body.
    """
    fingerprint = request.fingerprint()
    if idempotency_key is not None:
        existing = await _find_by_key(engine, idempotency_key, fingerprint)
        if existing is not None:
            return CreateResult(existing, created=False)
    moment = now or datetime.now(UTC)
    order_id = new_order_id()
    total = sum(item.qty * item.price for item in request.items)
    lines = [
        {"order_id": order_id, "line_no": n, "sku": i.sku, "qty": i.qty, "price": i.price}
        for n, i in enumerate(request.items)
    ]
    head = {
        "order_id": order_id,
        "customer_id": request.customer_id,
        "total": total,
        "created_at": moment,
        "idempotency_key": idempotency_key,
        "request_hash": fingerprint,
    }
    events = outbox_rows(order_id, request, moment)
    try:
        if engine.dialect.name == "postgresql":
            await _insert_postgres(engine, head, lines, events, writer)
        else:
            async with engine.begin() as conn:
                await conn.execute(insert(orders).values(**head))
                await conn.execute(insert(order_lines), lines)
                await conn.execute(insert(outbox), events)
    except IntegrityError:
        # A concurrent request with the same key won the race: answer as a retry.
        if idempotency_key is None:
            raise
        existing = await _find_by_key(engine, idempotency_key, fingerprint)
        if existing is None:
            raise
        return CreateResult(existing, created=False)
    return CreateResult(
        OrderResponse(
            order_id=order_id,
            customer_id=request.customer_id,
            items=[OrderLine(sku=i.sku, qty=i.qty, price=i.price) for i in request.items],
            total=total,
            created_at=rfc3339(moment),
        ),
        created=True,
    )


async def _insert_postgres(
    engine: AsyncEngine,
    head: dict[str, Any],
    lines: list[dict[str, Any]],
    events: list[dict[str, Any]],
    writer: PgOrderWriter | None,
) -> None:
    """The order, its lines and its outbox rows in one statement: one round trip, atomic.

    The same rows as the portable path below (schema.py is the reference); on
    PostgreSQL this keeps the outbox write from costing a round trip of its own.
    With a ``writer`` (the service's hot path) the statement skips SQLAlchemy.
    """
    params: tuple[Any, ...] = (
        head["order_id"],
        head["customer_id"],
        head["total"],
        head["created_at"],
        head["idempotency_key"],
        head["request_hash"],
        [ln["line_no"] for ln in lines],
        [ln["sku"] for ln in lines],
        [ln["qty"] for ln in lines],
        [ln["price"] for ln in lines],
        [e["event_id"] for e in events],
        [e["payload"] for e in events],
        [e["created_at"] for e in events],
    )
    if writer is not None:
        await writer.insert(params)
        return
    async with engine.connect() as conn:
        autocommit = await conn.execution_options(isolation_level="AUTOCOMMIT")
        await autocommit.exec_driver_sql(ORDER_WITH_OUTBOX, params)


def outbox_rows(order_id: str, request: OrderRequest, moment: datetime) -> list[dict[str, Any]]:
    """One outbox row per order line, carrying the event analytics will receive."""
    stamp = rfc3339(moment)
    created = moment.timestamp()
    rows = []
    for n, item in enumerate(request.items):
        ev = Event(
            event_id=event_id_for(order_id, n),
            order_id=order_id,
            sku=item.sku,
            qty=item.qty,
            weight=1.0,
            occurred_at=stamp,
        )
        rows.append({"event_id": ev.event_id, "payload": ev.to_json(), "created_at": created})
    return rows


async def _find_by_key(engine: AsyncEngine, key: str, fingerprint: str) -> OrderResponse | None:
    async with engine.connect() as conn:
        row = (
            await conn.execute(
                select(orders.c.order_id, orders.c.request_hash).where(
                    orders.c.idempotency_key == key
                )
            )
        ).first()
        if row is None:
            return None
        if row.request_hash != fingerprint:
            raise IdempotencyConflict(key)
        return await _load(conn, row.order_id)


async def get_order(engine: AsyncEngine, order_id: str) -> OrderResponse | None:
    async with engine.connect() as conn:
        return await _load(conn, order_id)


async def _load(conn: AsyncConnection, order_id: str) -> OrderResponse | None:
    head = (await conn.execute(select(orders).where(orders.c.order_id == order_id))).first()
    if head is None:
        return None
    lines = (
        await conn.execute(
            select(order_lines)
            .where(order_lines.c.order_id == order_id)
            .order_by(order_lines.c.line_no)
        )
    ).all()
    created_at = head.created_at
    if created_at.tzinfo is None:  # SQLite returns naive datetimes
        created_at = created_at.replace(tzinfo=UTC)
    return OrderResponse(
        order_id=head.order_id,
        customer_id=head.customer_id,
        items=[OrderLine(sku=r.sku, qty=r.qty, price=r.price) for r in lines],
        total=head.total,
        created_at=rfc3339(created_at),
    )


async def count_orders(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        return int((await conn.execute(select(func.count()).select_from(orders))).scalar_one())


async def popularity(engine: AsyncEngine) -> dict[str, float]:
    """The true popularity: ``sum(qty)`` per SKU over every stored order line."""
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(order_lines.c.sku, func.sum(order_lines.c.qty)).group_by(order_lines.c.sku)
        )
        return {str(sku): float(q) for sku, q in rows}


async def count_lines(engine: AsyncEngine) -> int:
    async with engine.connect() as conn:
        q = select(func.count()).select_from(order_lines)
        return int((await conn.execute(q)).scalar_one())


async def missing_orders(engine: AsyncEngine, ids: Sequence[str], chunk: int = 500) -> list[str]:
    """The ids among ``ids`` that the store does not hold (an accepted order lost)."""
    missing: list[str] = []
    async with engine.connect() as conn:
        for i in range(0, len(ids), chunk):
            part = list(ids[i : i + chunk])
            q = select(orders.c.order_id).where(orders.c.order_id.in_(part))
            found = {r.order_id for r in await conn.execute(q)}
            missing += [x for x in part if x not in found]
    return missing


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(select(1))


# --- outbox -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class OutboxRow:
    id: int
    event_id: str
    payload: str
    fold_token: str | None = None


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
        .returning(outbox.c.id, outbox.c.event_id, outbox.c.payload, outbox.c.fold_token)
    )
    async with engine.begin() as conn:
        rows = (await conn.execute(stmt)).all()
    claimed = [OutboxRow(r.id, r.event_id, r.payload, r.fold_token) for r in rows]
    claimed.sort(key=lambda r: r.id)
    return claimed


async def delete_published(engine: AsyncEngine, token: str, ids: Sequence[int]) -> int:
    """Remove rows that Redis accepted; only while this claim still holds them."""
    if not ids:
        return 0
    async with engine.begin() as conn:
        result = await conn.execute(
            delete(outbox).where(outbox.c.id.in_(ids)).where(outbox.c.lease_token == token)
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


async def mark_folded(engine: AsyncEngine, token: str, ids: Sequence[int]) -> int:
    """Record, before folding, that these claimed rows go into the fold ``token``."""
    if not ids:
        return 0
    async with engine.begin() as conn:
        result = await conn.execute(
            update(outbox)
            .where(outbox.c.id.in_(ids))
            .where(outbox.c.lease_token == token)
            .values(fold_token=token)
        )
    return int(result.rowcount)


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


async def fold_outbox(engine: AsyncEngine, limit: int, now: float) -> tuple[int, int, int]:
    """Fold up to ``limit`` rows into one aggregate row per SKU, in one transaction.

    Exact: per-SKU sums of ``qty * weight`` and of ``lines`` are what the rows
    held. The aggregate's id names the fold by its first row, so it is unique.
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
        window = f"o{events[0][0].id}"
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
