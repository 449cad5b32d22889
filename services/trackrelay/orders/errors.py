"""How the order service answers what went wrong: 503, 422, 409.

Exception handlers, registered on the app by ``install``: the store being down
is a 503 with Retry-After whichever route met it, and a 422 names the field
with every echoed input made safe to encode.
"""

from __future__ import annotations

import logging
from typing import Any

from asyncpg import InternalClientError
from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from sqlalchemy.exc import SQLAlchemyError

from trackrelay.orders.deps import metrics_of
from trackrelay.runtime.errors import brief

log = logging.getLogger(__name__)


class KeyConflict(Exception):
    """An Idempotency-Key already used with a different request body (409)."""


def install(app: FastAPI) -> None:
    app.exception_handler(SQLAlchemyError)(store_down)
    app.exception_handler(OSError)(store_unreachable)
    # SQLAlchemy's asyncpg adapter passes this one through unwrapped (idempotency
    # look-ups, reads, readiness): the store's error all the same (see pg_writer)
    app.exception_handler(InternalClientError)(store_unreachable)
    app.exception_handler(RequestValidationError)(invalid)
    app.exception_handler(KeyConflict)(conflict)


async def store_down(request: Request, exc: SQLAlchemyError) -> JSONResponse:
    metrics_of(request).orders_rejected.labels("store_unavailable").inc()
    # The class only: exception text can carry SQL and customer data.
    log.error("order store unavailable: %s", brief(exc))
    return JSONResponse(
        {
            "detail": "order store unavailable; the order was not accepted, or (when the store"
            " failed while committing it) not confirmed: retry with the same Idempotency-Key"
        },
        status_code=503,
        headers={"Retry-After": "1"},
    )


async def store_unreachable(request: Request, exc: OSError | InternalClientError) -> JSONResponse:
    return await store_down(request, SQLAlchemyError(brief(exc)))


async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
    if request.url.path == "/v1/orders":
        metrics_of(request).orders_rejected.labels("validation").inc()
    # Echoed inputs may hold lone surrogates, which no UTF-8 body can carry.
    detail = jsonable_encoder(printable(list(exc.errors())))
    return JSONResponse({"detail": detail}, status_code=422)


async def conflict(_request: Request, _exc: KeyConflict) -> JSONResponse:
    return JSONResponse(
        {"detail": "Idempotency-Key was already used with a different request body"},
        status_code=409,
    )


def printable(value: Any) -> Any:
    """``value`` with every string made UTF-8 safe (lone surrogates, bad bytes: U+FFFD)."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    if isinstance(value, tuple):
        return tuple(printable(v) for v in value)
    if isinstance(value, str):
        return value.encode("utf-8", "surrogatepass").decode("utf-8", "replace")
    if isinstance(value, list):
        return [printable(v) for v in value]
    if isinstance(value, dict):
        return {k: printable(v) for k, v in value.items()}
    return value
