"""The order API's validation and idempotency, against a real SQLite store."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from trackrelay.config.settings import OrderSettings
from trackrelay.orders import audit, store
from trackrelay.orders.app import create_app
from trackrelay.relay import outbox

GOOD: dict[str, Any] = {"customer_id": "c-1", "items": [{"sku": "A", "qty": 2, "price": 150}]}


@pytest.fixture
def settings(tmp_path: Path) -> OrderSettings:
    return OrderSettings(
        database_url=f"sqlite:///{tmp_path / 'o.db'}",
        run_relay=False,
        max_items=3,
        max_body_bytes=2048,
    )


@pytest.fixture
def client(settings: OrderSettings) -> Iterator[TestClient]:
    with TestClient(create_app(settings)) as c:
        yield c


def stored_orders(client: TestClient) -> int:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    return client.portal.call(audit.count_orders, engine)  # type: ignore[union-attr]


def stored_outbox(client: TestClient) -> int:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    stats = client.portal.call(outbox.outbox_stats, engine)  # type: ignore[union-attr]
    return stats.depth


def test_accepts_an_order_and_reads_it_back(client: TestClient) -> None:
    r = client.post("/v1/orders", json={**GOOD, "items": GOOD["items"] * 2})
    assert r.status_code == 201
    body = r.json()
    assert body["status"] == "accepted"
    assert body["total"] == 600
    got = client.get(f"/v1/orders/{body['order_id']}")
    assert got.status_code == 200
    assert got.json() == body
    assert stored_outbox(client) == 2  # one outbox row per order line


def test_unknown_order_is_404(client: TestClient) -> None:
    assert client.get("/v1/orders/nope").status_code == 404


BAD_BODIES = [
    ({**GOOD, "items": [{"sku": "A", "qty": 0, "price": 1}]}, ["items", 0, "qty"]),
    ({**GOOD, "items": [{"sku": "A", "qty": -1, "price": 1}]}, ["items", 0, "qty"]),
    ({**GOOD, "items": [{"sku": "A", "qty": 1, "price": -5}]}, ["items", 0, "price"]),
    ({**GOOD, "items": []}, ["items"]),
    ({**GOOD, "items": GOOD["items"] * 4}, ["items"]),
    ({**GOOD, "coupon": "FREE"}, ["coupon"]),
    ({**GOOD, "items": [{"sku": "A", "qty": 1, "price": 1, "x": 1}]}, ["items", 0, "x"]),
    ({**GOOD, "items": [{"sku": "A", "qty": "2", "price": 1}]}, ["items", 0, "qty"]),
    ({**GOOD, "items": [{"sku": "A", "qty": 1.5, "price": 1}]}, ["items", 0, "qty"]),
    ({**GOOD, "customer_id": 7}, ["customer_id"]),
    ({"items": GOOD["items"]}, ["customer_id"]),
    ({**GOOD, "items": [{"sku": "", "qty": 1, "price": 1}]}, ["items", 0, "sku"]),
]


@pytest.mark.parametrize(("body", "field"), BAD_BODIES)
def test_bad_input_is_422_naming_the_field_and_stores_nothing(
    client: TestClient, body: dict[str, Any], field: list[Any]
) -> None:
    r = client.post("/v1/orders", json=body)
    assert r.status_code == 422, r.text
    locs = [e["loc"] for e in r.json()["detail"]]
    assert ["body", *field] in locs
    assert stored_orders(client) == 0
    assert stored_outbox(client) == 0


def test_non_json_is_422(client: TestClient) -> None:
    r = client.post(
        "/v1/orders", content=b"{not json", headers={"content-type": "application/json"}
    )
    assert r.status_code == 422
    assert r.json()["detail"][0]["type"] == "json_invalid"
    assert stored_orders(client) == 0


def test_body_too_large_is_413(client: TestClient) -> None:
    big = {**GOOD, "customer_id": "x" * 4096}
    r = client.post("/v1/orders", json=big)
    assert r.status_code == 413
    assert "2048" in r.json()["detail"]

    # Without a Content-Length header (chunked), the limit still holds.
    def chunks() -> Iterator[bytes]:
        data = json.dumps(big).encode()
        for i in range(0, len(data), 512):
            yield data[i : i + 512]

    r = client.post("/v1/orders", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert stored_orders(client) == 0


def test_same_key_same_body_returns_the_same_order(client: TestClient) -> None:
    h = {"Idempotency-Key": "key-1"}
    first = client.post("/v1/orders", json=GOOD, headers=h)
    second = client.post("/v1/orders", json=GOOD, headers=h)
    assert first.status_code == 201
    assert second.status_code == 200
    assert first.json() == second.json()
    assert stored_orders(client) == 1
    assert stored_outbox(client) == 1


def test_same_key_other_body_is_409_and_stores_nothing(client: TestClient) -> None:
    h = {"Idempotency-Key": "key-2"}
    assert client.post("/v1/orders", json=GOOD, headers=h).status_code == 201
    other = {**GOOD, "items": [{"sku": "B", "qty": 1, "price": 1}]}
    r = client.post("/v1/orders", json=other, headers=h)
    assert r.status_code == 409
    assert stored_orders(client) == 1
    assert stored_outbox(client) == 1


def test_concurrent_retries_with_one_key_make_one_order(client: TestClient) -> None:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    from trackrelay.orders.models import OrderRequest

    req = OrderRequest.model_validate(GOOD)

    async def burst() -> set[str]:
        results = await asyncio.gather(
            *(store.create_order(engine, req, "same-key") for _ in range(8))
        )
        return {r.order.order_id for r in results}

    ids = client.portal.call(burst)  # type: ignore[union-attr]
    assert len(ids) == 1
    assert stored_orders(client) == 1


def test_health_and_metrics(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").status_code == 200
    client.post("/v1/orders", json=GOOD)
    text = client.get("/metrics").text
    assert "trackrelay_orders_accepted_total 1.0" in text
    assert "trackrelay_http_request_duration_seconds_bucket" in text


def test_openapi_documents_the_order_contract(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert "/v1/orders" in spec["paths"]
    assert "OrderRequest" in spec["components"]["schemas"]
