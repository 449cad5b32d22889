"""The bare order service the order-path benchmark measures trackrelay against.

FastAPI, the same strict pydantic models and bounds, a raw asyncpg pool of the
same size as trackrelay's, and the same single CTE statement (order, lines and one
outbox row per line, one transaction). No metrics, no idempotency, no error
handling: the floor of what this stack can do per order.
"""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import asyncpg
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from trackrelay.events import Event, event_id_for, rfc3339
from trackrelay.orders.models import OrderRequest
from trackrelay.orders.pg_writer import ORDER_WITH_OUTBOX

POOL_SIZE = 20  # trackrelay's engine pool


def create_bare_app(database_url: str) -> FastAPI:
    state: dict[str, asyncpg.Pool] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        dsn = database_url.replace("postgresql+asyncpg://", "postgresql://")
        state["pool"] = await asyncpg.create_pool(dsn, min_size=POOL_SIZE, max_size=POOL_SIZE)
        yield
        await state["pool"].close()

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/orders", status_code=201)
    async def create(order: OrderRequest) -> JSONResponse:
        order_id = uuid.uuid4().hex
        moment = datetime.now(UTC)
        stamp, created = rfc3339(moment), moment.timestamp()
        events = [
            Event(event_id_for(order_id, n), order_id, i.sku, i.qty, 1.0, stamp)
            for n, i in enumerate(order.items)
        ]
        total = sum(i.qty * i.price for i in order.items)
        await state["pool"].execute(
            ORDER_WITH_OUTBOX,
            order_id,
            order.customer_id,
            total,
            moment,
            None,
            order.fingerprint(),
            list(range(len(order.items))),
            [i.sku for i in order.items],
            [i.qty for i in order.items],
            [i.price for i in order.items],
            [e.event_id for e in events],
            [e.to_json() for e in events],
            [created] * len(events),
        )
        return JSONResponse(
            {"order_id": order_id, "status": "accepted", "total": total, "created_at": stamp},
            status_code=201,
        )

    return app


def from_env() -> FastAPI:
    """For uvicorn's worker processes: the database from ``BENCH_DATABASE_URL``."""
    return create_bare_app(os.environ["BENCH_DATABASE_URL"])
