"""The order service's FastAPI application, built by ``create_app(settings)``.

No work at import time: the engine, the Redis client and the relay task are
created in the app's lifespan, from the settings passed in. The routes live in
``routes.py``, what they depend on in ``deps.py``, the error answers in
``errors.py`` and the middleware in ``middleware.py``.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections.abc import AsyncIterator
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from trackrelay.config.settings import OrderSettings
from trackrelay.db import engine as database
from trackrelay.db import migrate
from trackrelay.orders import errors
from trackrelay.orders.metrics import OrderMetrics
from trackrelay.orders.middleware import BodyLimit, ObserveLatency
from trackrelay.orders.models import OrderRequest, order_request_model
from trackrelay.orders.pg_writer import PgOrderWriter
from trackrelay.orders.routes import ORDER_REQUEST_REF, operations, router
from trackrelay.queue import client
from trackrelay.relay.relay import OutboxRelay
from trackrelay.runtime.serve import listening_socket, make_server

log = logging.getLogger(__name__)


def create_app(settings: OrderSettings, redis_url: str | None = None) -> FastAPI:
    """Build the order service. ``redis_url`` overrides ``settings.redis_url`` (embedded Redis)."""
    database_url = settings.resolved_database_url()
    queue_url = redis_url or settings.redis_url
    if settings.run_relay and queue_url is None:
        raise ValueError("the relay needs a Redis URL (TRACKRELAY_REDIS_URL)")
    order_model = order_request_model(settings.max_items)
    metrics = OrderMetrics()
    lifespan = functools.partial(
        _lifespan, settings=settings, database_url=database_url, queue_url=queue_url
    )
    apart = settings.metrics_port is not None
    if apart and settings.metrics_port == settings.port and settings.port != 0:
        raise ValueError(f"the metrics port must differ from the API's ({settings.port})")
    documents: dict[str, Any] = {"docs_url": None, "redoc_url": None, "openapi_url": None}
    app = FastAPI(
        title="trackrelay order service",
        version="0.1.0",
        lifespan=lifespan,
        **(documents if apart else {}),
    )
    app.add_middleware(BodyLimit, limit=settings.max_body_bytes)
    app.add_middleware(ObserveLatency, histogram=metrics.request_latency)
    errors.install(app)
    app.include_router(router)
    if not apart:
        app.include_router(operations)
    app.openapi = functools.partial(_openapi, app, order_model)  # type: ignore[method-assign]
    app.state.order_model = order_model
    app.state.metrics = metrics
    app.state.background = []
    app.state.operations = operations_app(app) if apart else None
    return app


def operations_app(api: FastAPI) -> FastAPI:
    """``/metrics`` and the API's documents (``/docs``, ``/openapi.json``), for the port of
    their own: what they tell (the routes, the traffic) is for operators, not clients."""
    ops = FastAPI(title=f"{api.title}: operations", version=api.version, redoc_url=None)
    ops.include_router(operations)
    ops.openapi = api.openapi  # type: ignore[method-assign]  # the document of the API
    ops.state.metrics = api.state.metrics
    return ops


def _report_end(stop: asyncio.Event, task: asyncio.Task[None]) -> None:
    """A background task that ends before shutdown is logged at once, with its traceback
    (``/healthz`` fails from then on: ``routes.healthz``)."""
    if stop.is_set() or task.cancelled():
        return
    exc = task.exception()
    log.error("%s ended while the service runs", task.get_name(), exc_info=exc)


@contextlib.asynccontextmanager
async def _lifespan(
    app: FastAPI, *, settings: OrderSettings, database_url: str, queue_url: str | None
) -> AsyncIterator[None]:
    """Open the store (and the relay, when it runs here) for the app's life."""
    # The operations port first: a port taken stops the start before anything is opened.
    ops_port = settings.metrics_port if app.state.operations is not None else None
    sock = None
    if ops_port is not None:
        # Several worker processes share the port, as they share the API's.
        sock = listening_socket(settings.host, ops_port, shared=settings.workers > 1)
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
        relay = OutboxRelay(
            engine, redis, settings, metrics=app.state.metrics.relay, database_url=database_url
        )
        app.state.relay = relay
        tasks.append(asyncio.create_task(relay.run(stop), name="outbox-relay"))
    ops_server = None
    if sock is not None and ops_port is not None:
        # uvicorn's logging stays the API server's: this one configures none
        ops_server = make_server(app.state.operations, settings.host, ops_port, None)
        serving = ops_server.serve(sockets=[sock])
        tasks.append(asyncio.create_task(serving, name="operations-server"))
    for task in tasks:
        task.add_done_callback(functools.partial(_report_end, stop))
    app.state.background = tasks
    try:
        yield
    finally:
        running = [task for task in tasks if not task.done()]  # the others were logged
        stop.set()
        if ops_server is not None:
            ops_server.should_exit = True
        for task in running:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(task, timeout=10)
        if sock is not None:
            sock.close()  # uvicorn closes it when it stops in time; not when cut short
        if redis is not None:
            await redis.aclose()
        if app.state.writer is not None:
            await app.state.writer.close()
        await engine.dispose()


def _openapi(app: FastAPI, order_model: type[OrderRequest]) -> dict[str, Any]:
    """FastAPI's document plus the order body's schemas (the route parses it itself)."""
    if app.openapi_schema is None:
        doc = get_openapi(title=app.title, version=app.version, routes=app.routes)
        schema = order_model.model_json_schema(ref_template=ORDER_REQUEST_REF)
        components = doc.setdefault("components", {}).setdefault("schemas", {})
        components.update(schema.pop("$defs", {}))
        components["OrderRequest"] = schema
        app.openapi_schema = doc
    return app.openapi_schema
