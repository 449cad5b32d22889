"""The order API's request and response bodies (the contract in DESIGN.md).

Strict types: ``"qty": "2"`` is a 422, not a silent coercion; unknown fields are
refused so a typo in a client is seen at once.
"""

from __future__ import annotations

import hashlib

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr


class OrderItem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    sku: StrictStr = Field(min_length=1, max_length=128)
    qty: StrictInt = Field(gt=0, le=1_000_000)
    price: StrictInt = Field(ge=0, description="Unit price in minor units (cents).")


class OrderRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_id: StrictStr = Field(min_length=1, max_length=128)
    items: list[OrderItem] = Field(min_length=1)

    def fingerprint(self) -> str:
        """A digest of the request's meaning, to tell a retry from a different order."""
        canonical = self.model_dump_json()
        return hashlib.sha256(canonical.encode()).hexdigest()


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
