"""The order API's routes: create and read orders, health, readiness, metrics.

Each route takes what it needs as a dependency (``deps.py``) and the exception
handlers (``errors.py``) answer what goes wrong, so a route is the contract in
docs/contracts.md and nothing else. ``POST /v1/orders`` parses its own body; its
OpenAPI entry states the body and the header by hand, and ``create_app``
adds the body's schemas to the document.
"""

from __future__ import annotations

import asyncio
import logging
import re
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import ValidationError
from sqlalchemy.exc import SQLAlchemyError

from trackrelay.db import engine as database
from trackrelay.orders import store
from trackrelay.orders.deps import EngineDep, IntakeDep, MetricsDep
from trackrelay.orders.errors import KeyConflict
from trackrelay.orders.models import (
    ORDER_ID_PATTERN,
    ErrorBody,
    Health,
    OrderResponse,
    Readiness,
    ValidationProblem,
)
from trackrelay.runtime.errors import brief

log = logging.getLogger(__name__)

router = APIRouter()
"""The public routes: orders and the health probes."""
operations = APIRouter()
"""What only operators need: ``/metrics`` (``create_app`` puts it on its own port when
``metrics_port`` is set, with the API's documents)."""

ORDER_REQUEST_REF = "#/components/schemas/{model}"
"""Where the document keeps the order body's schemas (``ref_template`` for pydantic)."""
_ORDER_ID = re.compile(ORDER_ID_PATTERN)
_STORE_DOWN = {"model": ErrorBody, "description": "The order store is unavailable (Retry-After)."}
_TOO_LARGE = {"model": ErrorBody, "description": "The body is larger than MAX_BODY_BYTES."}
_IDEMPOTENCY_KEY = {
    "name": "Idempotency-Key",
    "in": "header",
    "required": False,
    "schema": {"type": "string", "minLength": 1, "maxLength": 255},
    "description": "Retries with the same key and body return the same order.",
}
_ORDER_BODY = {
    "required": True,
    "content": {
        "application/json": {"schema": {"$ref": ORDER_REQUEST_REF.format(model="OrderRequest")}}
    },
}


@router.post(
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
    openapi_extra={"parameters": [_IDEMPOTENCY_KEY], "requestBody": _ORDER_BODY},
)
async def create_order(request: Request, intake: IntakeDep) -> Response:
    """Parse and validate the body in one pass (pydantic's JSON mode), store, answer.

    Not FastAPI's parameter machinery: profiled, it cost a tenth of a request.
    The OpenAPI document still describes the body and the header (in the decorator).
    """
    key = request.headers.get("idempotency-key")
    errors = [] if key is None or 1 <= len(key) <= 255 else [_bad_key(key)]
    try:
        order = intake.model.model_validate_json(await request.body())
    except ValidationError as exc:
        errors += [{**e, "loc": ("body", *e["loc"])} for e in exc.errors(include_url=False)]
    if errors:
        raise RequestValidationError(errors)
    try:
        result = await store.create_order(intake.engine, order, key, writer=intake.writer)
    except store.IdempotencyConflict:
        intake.metrics.orders_rejected.labels("idempotency_conflict").inc()
        raise KeyConflict from None
    if result.created:
        intake.metrics.orders_accepted.inc()
        if intake.committed is not None:
            intake.committed()
    return Response(
        result.order.model_dump_json(),
        status_code=201 if result.created else 200,
        media_type="application/json",
    )


@router.get(
    "/v1/orders/{order_id}",
    response_model=OrderResponse,
    responses={404: {"model": ErrorBody, "description": "No such order."}, 503: _STORE_DOWN},
)
async def get_order(order_id: str, engine: EngineDep) -> Any:
    # Ids we never issue are not looked up (nor sent to the store, NULs and all).
    known_shape = _ORDER_ID.fullmatch(order_id) is not None
    found = await store.get_order(engine, order_id) if known_shape else None
    if found is None:
        return JSONResponse({"detail": f"order {order_id!r} not found"}, status_code=404)
    return found


@router.get(
    "/healthz",
    response_model=Health,
    responses={503: {"model": Health, "description": "A background task has ended."}},
)
async def healthz(request: Request) -> JSONResponse:
    """Alive while every background task (the relay, where it runs here) is running."""
    for task in request.app.state.background:
        if task.done():
            return JSONResponse({"status": "failed", "detail": _ended(task)}, status_code=503)
    return JSONResponse({"status": "ok"})


def _ended(task: asyncio.Task[None]) -> str:
    if task.cancelled():
        return f"{task.get_name()} was cancelled"
    exc = task.exception()
    if exc is None:
        return f"{task.get_name()} ended"
    return f"{task.get_name()} failed: {brief(exc)}"


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "A dependency is down."}},
)
async def readyz(engine: EngineDep) -> JSONResponse:
    try:
        await database.ping(engine)
    except (SQLAlchemyError, OSError) as exc:
        log.warning("readyz: order store unreachable: %s", brief(exc))
        return JSONResponse({"status": "unready", "database": "unreachable"}, status_code=503)
    return JSONResponse({"status": "ready"})


@operations.get(
    "/metrics",
    response_class=PlainTextResponse,
    responses={200: {"content": {CONTENT_TYPE_LATEST: {}}, "description": "Prometheus text"}},
)
async def prometheus(metrics: MetricsDep) -> Response:
    return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)


def _bad_key(key: str) -> dict[str, Any]:
    return {
        "type": "string_too_long" if key else "string_too_short",
        "loc": ("header", "idempotency-key"),
        "msg": "Idempotency-Key must be 1 to 255 characters",
        "input": key,
    }
