"""The order API's request and response bodies (the contract in docs/contracts.md).

Strict types: ``"qty": "2"`` is a 422, not a silent coercion (a JSON number with
no fraction, ``2.0``, is an integer as JSON Schema says); unknown fields are
refused so a typo in a client is seen at once.

Every bound is stated here and in the OpenAPI document, and each one fits both
stores, so what one store cannot hold is a 422 naming the field on both, never a
500: strings are 1-128 printable characters (no control characters, which
PostgreSQL's text refuses when NUL), ``qty`` at most 1,000,000 (a 32-bit
column), ``price`` at most ``MAX_PRICE``; with at most ``MAX_ITEMS_LIMIT`` lines
the total stays below 2**63 (a BIGINT on both stores).
"""

from __future__ import annotations

import hashlib
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, create_model

MAX_QTY = 1_000_000
MAX_PRICE = 1_000_000_000
"""Minor units: ten million in a two-decimal currency, per unit."""
MAX_ITEMS_LIMIT = 9_000
"""The highest ``max_items`` setting: 9,000 x 1e6 x 1e9 = 9e18 < 2**63 - 1."""
TEXT_PATTERN = r"^[^\x00-\x1f\x7f-\x9f]+$"
"""Printable text: no C0 or C1 control characters."""
ORDER_ID_PATTERN = r"^[0-9a-f]{32}$"


def _integral(value: Any) -> Any:
    """Accept JSON integers and integral numbers (``2.0``); refuse strings and booleans."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


_INTEGRAL = BeforeValidator(_integral)
Text = Annotated[str, Field(strict=True, min_length=1, max_length=128, pattern=TEXT_PATTERN)]


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: Text
    # Field before the validator, so the bounds reach the JSON schema as JSON Schema.
    qty: Annotated[int, Field(strict=True, gt=0, le=MAX_QTY), _INTEGRAL]
    price: Annotated[
        int,
        Field(strict=True, ge=0, le=MAX_PRICE, description="Unit price in minor units (cents)."),
        _INTEGRAL,
    ]


class OrderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: Text
    items: list[OrderItem] = Field(min_length=1, max_length=MAX_ITEMS_LIMIT)

    def fingerprint(self) -> str:
        """A digest of the request's meaning, to tell a retry from a different order."""
        canonical = self.model_dump_json()
        return hashlib.sha256(canonical.encode()).hexdigest()


def order_request_model(max_items: int) -> type[OrderRequest]:
    """``OrderRequest`` with the service's item limit in its schema (documented, enforced)."""
    if not 1 <= max_items <= MAX_ITEMS_LIMIT:
        raise ValueError(f"max_items must be between 1 and {MAX_ITEMS_LIMIT}")
    model: type[OrderRequest] = create_model(
        "OrderRequest",
        __base__=OrderRequest,
        items=(list[OrderItem], Field(min_length=1, max_length=max_items)),
    )
    return model


class OrderLine(BaseModel):
    sku: str
    qty: int
    price: int


class OrderResponse(BaseModel):
    order_id: str
    status: str = "accepted"
    customer_id: str
    items: list[OrderLine]
    total: int
    created_at: str


class ErrorBody(BaseModel):
    """Every non-validation error answers ``{"detail": "..."}``."""

    detail: str


class ValidationProblem(BaseModel):
    """A 422: one entry per problem, each naming its field in ``loc``."""

    detail: list[dict[str, Any]]


class Health(BaseModel):
    status: str
    detail: str | None = None
    """Which background task ended, and how."""


class Readiness(BaseModel):
    status: str
    database: str | None = None
