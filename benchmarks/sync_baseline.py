"""The naive design trackrelay replaces: call analytics inside the order request.

Same framework, validation and database as trackrelay's order service; the
order is committed only if ``TrackOrder`` answered in time: the design that puts
analytics on the order path (README.md), so a slow or down analytics loses orders.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from sqlalchemy import insert
from sqlalchemy.ext.asyncio import AsyncEngine

from trackrelay.db import engine as database
from trackrelay.db.schema import order_lines, orders
from trackrelay.events import Event, event_id_for, rfc3339
from trackrelay.orders import store
from trackrelay.orders.models import OrderRequest


def create_sync_app(database_url: str, analytics_url: str, timeout: float = 2.0) -> FastAPI:
    state: dict[str, object] = {}

    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        state["engine"] = database.make_engine(database_url)
        state["http"] = httpx.AsyncClient(timeout=timeout, limits=httpx.Limits(max_connections=256))
        yield
        await state["http"].aclose()  # type: ignore[attr-defined]
        await state["engine"].dispose()  # type: ignore[attr-defined]

    app = FastAPI(lifespan=lifespan)

    @app.post("/v1/orders", status_code=201)
    async def create(order: OrderRequest) -> JSONResponse:
        engine: AsyncEngine = state["engine"]  # type: ignore[assignment]
        http: httpx.AsyncClient = state["http"]  # type: ignore[assignment]
        order_id = store.new_order_id()
        now = datetime.now(UTC)
        async with engine.connect() as conn:
            tx = await conn.begin()
            await conn.execute(
                insert(orders).values(
                    order_id=order_id,
                    customer_id=order.customer_id,
                    total=sum(i.qty * i.price for i in order.items),
                    created_at=now,
                    idempotency_key=None,
                    request_hash=order.fingerprint(),
                )
            )
            await conn.execute(
                insert(order_lines),
                [
                    {
                        "order_id": order_id,
                        "line_no": n,
                        "sku": i.sku,
                        "qty": i.qty,
                        "price": i.price,
                    }
                    for n, i in enumerate(order.items)
                ],
            )
            events = [
                Event(
                    event_id_for(order_id, n), order_id, i.sku, i.qty, 1.0, rfc3339(now)
                ).to_dict()
                for n, i in enumerate(order.items)
            ]
            try:
                r = await http.post(f"{analytics_url}/v1/track", json={"events": events})
                r.raise_for_status()
            except httpx.HTTPError as exc:
                await tx.rollback()
                return JSONResponse({"detail": f"analytics failed: {exc}"}, status_code=502)
            await tx.commit()
        return JSONResponse({"order_id": order_id, "status": "accepted"}, status_code=201)

    return app
