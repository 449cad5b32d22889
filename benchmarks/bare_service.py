"""The bare order service the order-path benchmark measures trackrelay against.

The minimum that does the same job: FastAPI with the same strict pydantic models
and bounds, a raw asyncpg pool of the same size as trackrelay's, and one statement
writing the order, its lines and one event per line in one transaction, into
tables of its own with only the columns the job needs (``SCHEMA``: no idempotency
key or fingerprint, no lease or fold columns, no index but the primary keys). No
metrics, no idempotency, no error handling, no relay: the floor of what this stack
can do per order. What trackrelay adds over it must pay for itself in a guarantee.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from trackrelay.db.engine import asyncpg_dsn
from trackrelay.events import Event, event_id_for, rfc3339
from trackrelay.orders.models import OrderRequest

POOL_SIZE = 20  # trackrelay's engine pool

SCHEMA = """
CREATE TABLE IF NOT EXISTS bare_orders (
  order_id varchar(32) PRIMARY KEY, customer_id varchar(128) NOT NULL,
  total bigint NOT NULL, created_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS bare_order_lines (
  order_id varchar(32) NOT NULL, line_no int NOT NULL, sku varchar(128) NOT NULL,
  qty int NOT NULL, price bigint NOT NULL, PRIMARY KEY (order_id, line_no));
CREATE TABLE IF NOT EXISTS bare_outbox (id bigserial PRIMARY KEY, payload text NOT NULL);
"""

INSERT = (
    "WITH o AS (INSERT INTO bare_orders (order_id, customer_id, total, created_at)"
    " VALUES ($1, $2, $3, $4)),"
    " l AS (INSERT INTO bare_order_lines (order_id, line_no, sku, qty, price)"
    " SELECT $1, * FROM unnest($5::int[], $6::varchar[], $7::int[], $8::bigint[]))"
    " INSERT INTO bare_outbox (payload) SELECT unnest($9::text[])"
)


async def _create_tables(database_url: str) -> None:
    con = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        await con.execute(SCHEMA)
    finally:
        await con.close()


def prepare(database_url: str) -> None:
    """Create the bare tables (once, before any worker starts)."""
    asyncio.run(_create_tables(database_url))


def create_bare_app(database_url: str) -> FastAPI:
    state: dict[str, asyncpg.Pool] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        dsn = asyncpg_dsn(database_url)
        state["pool"] = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        yield
        await state["pool"].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/orders", status_code=201)
    async def create(order: OrderRequest) -> JSONResponse:
        order_id = uuid.uuid4().hex
        moment = datetime.now(UTC)
        stamp = rfc3339(moment)
        events = [
            Event(event_id_for(order_id, n), order_id, i.sku, i.qty, 1.0, stamp).to_json()
            for n, i in enumerate(order.items)
        ]
        total = sum(i.qty * i.price for i in order.items)
        await state["pool"].execute(
            INSERT,
            order_id,
            order.customer_id,
            total,
            moment,
            list(range(len(order.items))),
            [i.sku for i in order.items],
            [i.qty for i in order.items],
            [i.price for i in order.items],
            events,
        )
        return JSONResponse(
            {"order_id": order_id, "status": "accepted", "total": total, "created_at": stamp},
            status_code=201,
        )

    return app


def from_env() -> FastAPI:
    """For uvicorn's worker processes: the database from ``BENCH_DATABASE_URL``."""
    return create_bare_app(os.environ["BENCH_DATABASE_URL"])
