"""SQL for orders and idempotency keys: an order, its lines and one outbox row per line
are written in one transaction, so an accepted order always has its events.

Every function takes the engine as a parameter; event ids come from pure modules.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import insert, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from trackrelay.db.schema import order_lines, orders, outbox
from trackrelay.events import Event, event_id_for, rfc3339
from trackrelay.orders.models import OrderLine, OrderRequest, OrderResponse
from trackrelay.orders.pg_writer import ORDER_WITH_OUTBOX, PgOrderWriter


class IdempotencyConflict(Exception):
    """The idempotency key was already used for a different request body."""


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
