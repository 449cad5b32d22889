"""The order service's FastAPI application, built by ``create_app(settings)``.

No work at import time: the engine, the Redis client and the relay task are
created in the app's lifespan, from the settings passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import FastAPI, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from redis.asyncio import Redis
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trackrelay.orders import migrate, store
from trackrelay.orders.metrics import OrderMetrics
from trackrelay.orders.models import OrderRequest, OrderResponse
from trackrelay.orders.relay import OutboxRelay
from trackrelay.settings import OrderSettings

log = logging.getLogger(__name__)


class BodyLimit:
    """Answer 413 once a request body passes ``limit`` bytes, before anything is parsed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._reject(send)
                return
        # Bodies are small (kilobytes): read the whole body first, then replay it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.limit} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_receive, send)


class ObserveLatency:
    """Record each request's latency by method, route template and status (pure ASGI)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


def _replay(messages: list[Message], then: Receive) -> Receive:
    """A receive channel that yields ``messages`` first, then the real channel."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return receive


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}


def create_app(settings: OrderSettings, redis_url: str | None = None) -> FastAPI:
    """Build the order service. ``redis_url`` overrides ``settings.redis_url`` (embedded Redis)."""
    database_url = settings.resolved_database_url()
    queue_url = redis_url or settings.redis_url
    if settings.run_relay and queue_url is None:
        raise ValueError("the relay needs a Redis URL (TRACKRELAY_REDIS_URL)")
    metrics = OrderMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await asyncio.to_thread(migrate.upgrade, database_url)
        engine = store.make_engine(database_url)
        app.state.engine = engine
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        redis: Redis | None = None
        if settings.run_relay and queue_url is not None:
            redis = Redis.from_url(queue_url, socket_timeout=5, socket_connect_timeout=2)
            relay = OutboxRelay(engine, redis, settings, metrics=metrics)
            tasks.append(asyncio.create_task(relay.run(stop), name="outbox-relay"))
        try:
            yield
        finally:
            stop.set()
            for task in tasks:
                with contextlib.suppress(asyncio.CancelledError):
                    await asyncio.wait_for(task, timeout=10)
            if redis is not None:
                await redis.aclose()
            await engine.dispose()

    app = FastAPI(title="trackrelay order service", version="0.1.0", lifespan=lifespan)
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(ObserveLatency, histogram=metrics.request_latency)

    def engine_of(request: Request) -> AsyncEngine:
        engine: AsyncEngine = request.app.state.engine
        return engine

    @app.exception_handler(SQLAlchemyError)
    async def store_down(_request: Request, exc: SQLAlchemyError) -> JSONResponse:
        metrics.orders_rejected.labels("store_unavailable").inc()
        log.error("order store unavailable: %s", exc)
        return JSONResponse(
            {"detail": "order store unavailable; the order was not accepted, retry later"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(OSError)
    async def store_unreachable(request: Request, exc: OSError) -> JSONResponse:
        return await store_down(request, SQLAlchemyError(str(exc)))

    @app.post("/v1/orders", status_code=201, response_model=OrderResponse)
    async def create_order(
        order: OrderRequest,
        request: Request,
        response: Response,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> OrderResponse:
        if len(order.items) > settings.max_items:
            metrics.orders_rejected.labels("validation").inc()
            raise RequestValidationError(
                [
                    {
                        "type": "too_long",
                        "loc": ("body", "items"),
                        "msg": f"an order may hold at most {settings.max_items} items",
                        "input": len(order.items),
                    }
                ]
            )
        try:
            result = await store.create_order(engine_of(request), order, idempotency_key)
        except store.IdempotencyConflict:
            metrics.orders_rejected.labels("idempotency_conflict").inc()
            raise _Conflict from None
        if result.created:
            metrics.orders_accepted.inc()
        else:
            response.status_code = 200
        return result.order

    @app.exception_handler(_Conflict)
    async def conflict(_request: Request, _exc: _Conflict) -> JSONResponse:
        return JSONResponse(
            {"detail": "Idempotency-Key was already used with a different request body"},
            status_code=409,
        )

    @app.get("/v1/orders/{order_id}", response_model=OrderResponse)
    async def get_order(order_id: str, request: Request) -> Any:
        found = await store.get_order(engine_of(request), order_id)
        if found is None:
            return JSONResponse({"detail": f"order {order_id} not found"}, status_code=404)
        return found

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz(request: Request) -> JSONResponse:
        try:
            await store.ping(engine_of(request))
        except (SQLAlchemyError, OSError) as exc:
            return JSONResponse({"status": "unready", "database": str(exc)}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.metrics = metrics
    return app


class _Conflict(Exception):
    pass
