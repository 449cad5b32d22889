"""The same bounds on both stores: the largest order is stored, anything beyond is a 422.

What one store could not hold (NUL in text, 64-bit totals, 32-bit quantities) is
refused by the API with the field named, never a 500 or 503, on SQLite and
PostgreSQL alike; migrations are safe with many replicas and match the models.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from fastapi.testclient import TestClient
from sqlalchemy.engine import Connection

from tests.support.postgres import PostgresCluster
from trackrelay.config.settings import OrderSettings, resolve_database_url
from trackrelay.db import engine as database
from trackrelay.db import migrate
from trackrelay.db.schema import MIGRATION_LOCK_KEY, metadata
from trackrelay.orders import audit
from trackrelay.orders.app import create_app
from trackrelay.orders.models import MAX_ITEMS_LIMIT, MAX_PRICE, MAX_QTY


@pytest.fixture
def client(database_url: str) -> Iterator[TestClient]:
    settings = OrderSettings(database_url=database_url, run_relay=False, max_items=100)
    with TestClient(create_app(settings)) as c:
        yield c


def order(**item: Any) -> dict[str, Any]:
    return {"customer_id": "c", "items": [{"sku": "A", "qty": 1, "price": 1, **item}]}


def test_the_largest_order_is_stored_exactly(client: TestClient) -> None:
    line = {"sku": "é" * 128, "qty": MAX_QTY, "price": MAX_PRICE}
    body = {"customer_id": "☃" * 128, "items": [line] * 100}
    r = client.post("/v1/orders", json=body)
    assert r.status_code == 201, r.text
    assert r.json()["total"] == 100 * MAX_QTY * MAX_PRICE
    back = client.get(f"/v1/orders/{r.json()['order_id']}").json()
    assert back["items"][0] == line and back["customer_id"] == body["customer_id"]
    assert MAX_ITEMS_LIMIT * MAX_QTY * MAX_PRICE < 2**63 - 1  # no setting can overflow


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (order(price=MAX_PRICE + 1), ["body", "items", 0, "price"]),
        (order(qty=MAX_QTY + 1), ["body", "items", 0, "qty"]),
        (order(qty=2**40), ["body", "items", 0, "qty"]),
        (order(sku="a\x00b"), ["body", "items", 0, "sku"]),
        (order(sku="tab\there"), ["body", "items", 0, "sku"]),
        (order(sku="x" * 129), ["body", "items", 0, "sku"]),
        ({**order(), "customer_id": "nul\x00"}, ["body", "customer_id"]),
        (order(qty=True), ["body", "items", 0, "qty"]),
        (order(qty=2.5), ["body", "items", 0, "qty"]),
    ],
)
def test_what_a_store_cannot_hold_is_a_422_naming_the_field(
    client: TestClient, body: dict[str, Any], field: list[Any]
) -> None:
    r = client.post("/v1/orders", json=body)
    assert r.status_code == 422, r.text
    assert field in [e["loc"] for e in r.json()["detail"]]
    assert client.portal.call(audit.count_orders, client.app.state.engine) == 0  # type: ignore[attr-defined,union-attr]


def test_a_lone_surrogate_is_a_422(client: TestClient) -> None:
    raw = '{"customer_id": "c", "items": [{"sku": "\\ud800", "qty": 1, "price": 1}]}'
    r = client.post("/v1/orders", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text


def test_a_body_that_is_not_utf8_is_a_422(client: TestClient) -> None:
    raw = b'{"customer_id": "\xff\xfe", "items": []}'
    r = client.post("/v1/orders", content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert r.json()["detail"][0]["loc"][0] == "body"


def test_integral_numbers_are_integers(client: TestClient) -> None:
    r = client.post("/v1/orders", json=order(qty=3.0, price=250.0))
    assert r.status_code == 201, r.text
    assert r.json()["total"] == 750


def test_ids_never_issued_are_404_without_a_lookup(client: TestClient) -> None:
    for odd in ("nope", "a%00b", "0" * 33, "%ff%fe"):
        assert client.get(f"/v1/orders/{odd}").status_code == 404


def test_models_and_migrations_describe_the_same_schema(database_url: str) -> None:
    url = resolve_database_url(database_url, Path("."))
    migrate.upgrade(url)
    engine = database.make_engine(url)

    def diff(conn: Connection) -> list[Any]:
        return list(compare_metadata(MigrationContext.configure(conn), metadata))

    async def go() -> list[Any]:
        async with engine.connect() as conn:
            found = await conn.run_sync(diff)
        await engine.dispose()
        return found

    assert asyncio.run(go()) == []


async def test_migrations_wait_for_the_replica_that_holds_the_lock(
    postgres: PostgresCluster,
) -> None:
    """While one replica migrates (holds the advisory lock), another waits, then finds head.

    PostgreSQL only: SQLite serialises writers and has no advisory lock.
    """
    database_url = postgres.create_database()
    conn = await asyncpg.connect(database_url)
    try:
        await conn.execute("SELECT pg_advisory_lock($1)", MIGRATION_LOCK_KEY)
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "trackrelay.cli",
            "migrate",
            "--database-url",
            database_url,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        await asyncio.sleep(4)
        assert proc.returncode is None, "migrate did not wait for the lock"
        orders_tables = "SELECT count(*) FROM pg_tables WHERE tablename = 'orders'"
        assert await conn.fetchval(orders_tables) == 0
        await conn.execute("SELECT pg_advisory_unlock($1)", MIGRATION_LOCK_KEY)
        _, err = await asyncio.wait_for(proc.communicate(), 60)
        assert proc.returncode == 0, err
        assert await conn.fetchval(orders_tables) == 1
    finally:
        await conn.close()


def test_sqlite_commits_durably(tmp_path: Path) -> None:
    """A 201 promises the order survives: synchronous=FULL on every pooled connection."""
    engine = database.make_engine(f"sqlite+aiosqlite:///{tmp_path / 'o.db'}")

    async def pragma() -> tuple[Any, Any]:
        async with engine.connect() as conn:
            sync = (await conn.exec_driver_sql("PRAGMA synchronous")).scalar()
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
        await engine.dispose()
        return sync, mode

    assert asyncio.run(pragma()) == (2, "wal")  # 2 = FULL


async def _drop(admin_url: str, database: str) -> None:
    conn = await asyncpg.connect(admin_url)
    try:
        await conn.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
    finally:
        await conn.close()


def test_a_store_that_is_gone_is_a_503_and_no_customer_data_is_logged(
    postgres: PostgresCluster, caplog: pytest.LogCaptureFixture
) -> None:
    url = postgres.create_database()
    settings = OrderSettings(database_url=url, run_relay=False)
    secret = "customer-4711-private"
    with TestClient(create_app(settings)) as client:
        assert client.post("/v1/orders", json={**order(), "customer_id": secret}).status_code == 201
        asyncio.run(_drop(postgres.url(), url.rsplit("/", 1)[1]))
        r = client.post("/v1/orders", json={**order(), "customer_id": secret})
        assert r.status_code == 503 and r.headers["retry-after"] == "1"
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"status": "unready", "database": "unreachable"}
    assert secret not in caplog.text
    assert "order store unavailable" in caplog.text
