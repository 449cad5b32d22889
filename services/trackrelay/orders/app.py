"""The order service's FastAPI application, built by ``create_app(settings)``.

No work at import time: the engine, the Redis client and the relay task are
created in the app's lifespan, from the settings passed in.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.openapi.utils import get_openapi
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, Histogram, generate_latest
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from trackrelay.config.settings import OrderSettings
from trackrelay.db import engine as database
from trackrelay.db import migrate
from trackrelay.orders import store
from trackrelay.orders.metrics import OrderMetrics
from trackrelay.orders.models import (
    ORDER_ID_PATTERN,
    ErrorBody,
    OrderResponse,
    Readiness,
    ValidationProblem,
    order_request_model,
)
from trackrelay.orders.pg_writer import PgOrderWriter
from trackrelay.queue import client
from trackrelay.relay.relay import OutboxRelay
from trackrelay.runtime.errors import brief

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


_ORDER_ID = re.compile(ORDER_ID_PATTERN)
_REF = "#/components/schemas/{model}"
_ORDER_REQUEST_REF = _REF.format(model="OrderRequest")
_STORE_DOWN = {"model": ErrorBody, "description": "The order store is unavailable (Retry-After)."}
_TOO_LARGE = {"model": ErrorBody, "description": "The body is larger than MAX_BODY_BYTES."}


def create_app(settings: OrderSettings, redis_url: str | None = None) -> FastAPI:
    """Build the order service. ``redis_url`` overrides ``settings.redis_url`` (embedded Redis)."""
    database_url = settings.resolved_database_url()
    queue_url = redis_url or settings.redis_url
    if settings.run_relay and queue_url is None:
        raise ValueError("the relay needs a Redis URL (TRACKRELAY_REDIS_URL)")
    order_model = order_request_model(settings.max_items)
    metrics = OrderMetrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.migrate_on_start:
            await asyncio.to_thread(migrate.upgrade, database_url)
        on_postgres = database_url.startswith("postgresql")
        # On PostgreSQL the hot insert has a raw pool of its own (pg_writer.py); the
        # engine keeps reads, idempotency look-ups and the relay.
        engine = database.make_engine(database_url, pool_size=5 if on_postgres else 20)
        app.state.engine = engine
        app.state.writer = (
            await PgOrderWriter.open(database_url, settings.db_pool_size) if on_postgres else None
        )
        stop = asyncio.Event()
        tasks: list[asyncio.Task[None]] = []
        redis = None
        app.state.relay = None
        if settings.run_relay and queue_url is not None:
            redis = client.connect(queue_url)
            relay = OutboxRelay(engine, redis, settings, metrics=metrics.relay)
            app.state.relay = relay
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
            if app.state.writer is not None:
                await app.state.writer.close()
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
        # The class only: exception text can carry SQL and customer data.
        log.error("order store unavailable: %s", brief(exc))
        return JSONResponse(
            {"detail": "order store unavailable; the order was not accepted, retry later"},
            status_code=503,
            headers={"Retry-After": "1"},
        )

    @app.exception_handler(OSError)
    async def store_unreachable(request: Request, exc: OSError) -> JSONResponse:
        return await store_down(request, SQLAlchemyError(brief(exc)))

    async def create_order(request: Request) -> Response:
        """Parse and validate the body in one pass (pydantic's JSON mode), store, answer.

        Not FastAPI's parameter machinery: profiled, it cost a tenth of a request.
        The OpenAPI document still describes the body and the header (below).
        """
        key = request.headers.get("idempotency-key")
        errors = [] if key is None or 1 <= len(key) <= 255 else [_bad_key(key)]
        try:
            order = order_model.model_validate_json(await request.body())
        except ValidationError as exc:
            errors += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
        if errors:
            raise RequestValidationError(errors)
        try:
            result = await store.create_order(
                engine_of(request), order, key, writer=request.app.state.writer
            )
        except store.IdempotencyConflict:
            metrics.orders_rejected.labels("idempotency_conflict").inc()
            raise _Conflict from None
        if result.created:
            metrics.orders_accepted.inc()
        return Response(
            result.order.model_dump_json(),
            status_code=201 if result.created else 200,
            media_type="application/json",
        )

    app.post(
        "/v1/orders",
        status_code=201,
        response_model=OrderResponse,
        responses={
            200: {"model": OrderResponse, "description": "A retry: the order stored before."},
            409: {"model": ErrorBody, "description": "Idempotency-Key used for another body."},
            413: _TOO_LARGE,
            422: {"model": ValidationProblem, "description": "Bad input; the field is named."},
            503: _STORE_DOWN,
        },
        openapi_extra={
            "parameters": [
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
                    "description": "Retries with the same key and body return the same order.",
                }
            ],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": _REF.format(model="OrderRequest")}}
                },
            },
        },
    )(create_order)

    def openapi() -> dict[str, Any]:
        """FastAPI's document plus the order body's schemas (the route parses it itself)."""
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
            schema = order_model.model_json_schema(ref_template=_REF)
            components = doc.setdefault("components", {}).setdefault("schemas", {})
            components.update(schema.pop("$defs", {}))
            components["OrderRequest"] = schema
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        if request.url.path == "/v1/orders":
            metrics.orders_rejected.labels("validation").inc()
        # Echoed inputs may hold lone surrogates, which no UTF-8 body can carry.
        detail = jsonable_encoder(_printable(list(exc.errors())))
        return JSONResponse({"detail": detail}, status_code=422)

    @app.exception_handler(_Conflict)
    async def conflict(_request: Request, _exc: _Conflict) -> JSONResponse:
        return JSONResponse(
            {"detail": "Idempotency-Key was already used with a different request body"},
            status_code=409,
        )

    @app.get(
        "/v1/orders/{order_id}",
        response_model=OrderResponse,
        responses={404: {"model": ErrorBody, "description": "No such order."}, 503: _STORE_DOWN},
    )
    async def get_order(order_id: str, request: Request) -> Any:
        # Ids we never issue are not looked up (nor sent to the store, NULs and all).
        known_shape = _ORDER_ID.fullmatch(order_id) is not None
        found = await store.get_order(engine_of(request), order_id) if known_shape else None
        if found is None:
            return JSONResponse({"detail": f"order {order_id!r} not found"}, status_code=404)
        return found

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get(
        "/readyz",
        response_model=Readiness,
        responses={503: {"model": Readiness, "description": "A dependency is down."}},
    )
    async def readyz(request: Request) -> JSONResponse:
        try:
            await database.ping(engine_of(request))
        except (SQLAlchemyError, OSError) as exc:
            log.warning("readyz: order store unreachable: %s", brief(exc))
            return JSONResponse({"status": "unready", "database": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    @app.get(
        "/metrics",
        response_class=PlainTextResponse,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
    )
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    app.state.metrics = metrics
    return app


class _Conflict(Exception):
    pass


def _bad_key(key: str) -> dict[str, Any]:
    return {
        "type": "string_too_long" if key else "string_too_short",
        "loc": ("header", "idempotency-key"),
        "msg": "Idempotency-Key must be 1 to 255 characters",
        "input": key,
    }


def _printable(value: Any) -> Any:
    """``value`` with every string made UTF-8 safe (lone surrogates, bad bytes: U+FFFD)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple):
        return tuple(_printable(v) for v in value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, list):
        return [_printable(v) for v in value]
    if isinstance(value, dict):
        return {k: _printable(v) for k, v in value.items()}
    return value
