"""The outbox relay against real PostgreSQL/SQLite and a real Redis.

Every outbox row reaches the stream exactly once when nothing crashes, at least
once when a relay dies mid-batch, and orders keep being accepted while Redis is
down or refusing writes.
"""

from __future__ import annotations

import asyncio
import collections
import signal
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis.asyncio import Redis
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.conftest import (
    insert_orders,
    stream_event_ids,
    wait_for,
    wait_until_drained,
)
from trackrelay.config.settings import OrderSettings, resolve_database_url
from trackrelay.db import engine as database
from trackrelay.db import migrate
from trackrelay.db.schema import outbox as outbox_table
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all
from trackrelay.orders.app import create_app
from trackrelay.queue.keys import STREAM
from trackrelay.relay import outbox
from trackrelay.relay.relay import OutboxRelay

ORDERS = 10_000


def relays_for(database_url: str) -> int:
    """Four competing relays on PostgreSQL; SQLite runs one (it serialises writers)."""
    return 4 if database_url.startswith("postgres") else 1


async def test_every_row_reaches_the_stream_exactly_once(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    url = resolve_database_url(database_url, tmp_path)
    await asyncio.to_thread(migrate.upgrade, url)
    settings = OrderSettings(relay_batch_size=200)
    engines = [database.make_engine(url) for _ in range(relays_for(database_url) + 1)]
    redis = Redis.from_url(redis_server.url)
    stop = asyncio.Event()
    relays = [OutboxRelay(e, redis, settings, owner=f"r{i}") for i, e in enumerate(engines[1:])]
    tasks = [asyncio.create_task(r.run(stop)) for r in relays]
    try:
        expected = await insert_orders(engines[0], ORDERS)  # relays compete while orders arrive
        await wait_until_drained(engines[0], timeout=120)
    finally:
        stop.set()
        await asyncio.gather(*tasks)
    seen = await stream_event_ids(redis)
    dupes = [k for k, v in collections.Counter(seen).items() if v > 1]
    assert dupes == []
    assert set(seen) == expected
    assert len(seen) == 2 * ORDERS
    await redis.aclose()
    for e in engines:
        await e.dispose()


async def test_a_relay_killed_mid_batch_loses_nothing(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    url = resolve_database_url(database_url, tmp_path)
    await asyncio.to_thread(migrate.upgrade, url)
    engine = database.make_engine(url)
    env = {
        "TRACKRELAY_DATABASE_URL": database_url,
        "TRACKRELAY_REDIS_URL": redis_server.url,
        "TRACKRELAY_RELAY_LEASE_SECONDS": "2",
        "TRACKRELAY_RELAY_BATCH_SIZE": "300",
    }
    log = tmp_path / "relays.log"
    others = [
        spawn_role(["relay", "--owner", f"steady{i}"], env, log)
        for i in range(relays_for(database_url) - 1)
    ]
    # Orders keep arriving until every victim is dead, so there is always a batch to die in
    # however slowly the victims start.
    victims_done = asyncio.Event()

    async def produce() -> set[str]:
        ids: set[str] = set()
        while not victims_done.is_set() or len(ids) < 2 * ORDERS:
            ids |= await insert_orders(engine, 50, concurrency=4)
        return ids

    producing = asyncio.create_task(produce())
    kills_mid_batch = 0
    try:
        for round_no in range(5):
            victim = spawn_role(["relay", "--owner", f"victim{round_no}"], env, log)
            others.append(victim)  # stopped in finally if the test fails before the kill
            prefix = f"victim{round_no}/"
            # Frozen the moment its lease shows (a batch takes milliseconds): a crash mid-batch,
            # not a race with the batch's end. Frozen between batches, it is let go and caught
            # at its next one, until one freeze lands inside a batch.
            for _ in range(50):
                if not await _wait_for_lease(engine, prefix, timeout=30):
                    break
                victim.send_signal(signal.SIGSTOP)
                if await _leased_rows(engine, prefix):
                    kills_mid_batch += 1
                    break
                victim.send_signal(signal.SIGCONT)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
        victims_done.set()
        expected = await producing
        # A survivor (on SQLite, the only relay left) takes the dead relays' rows over.
        others.append(spawn_role(["relay", "--owner", "survivor"], env, log))
        await wait_until_drained(engine, timeout=120)
    finally:
        victims_done.set()
        stop_all(others)
    assert kills_mid_batch >= 1, "no relay was killed while it held a batch"
    redis = Redis.from_url(redis_server.url)
    seen = await stream_event_ids(redis)
    assert set(seen) == expected  # at least once: nothing lost, nothing left behind
    assert await outbox.outbox_stats(engine) == outbox.OutboxStats(0, None)
    await redis.aclose()
    await engine.dispose()


async def _leased_rows(engine: AsyncEngine, prefix: str) -> int:
    async with engine.connect() as conn:
        rows = await conn.execute(
            select(outbox_table.c.id).where(outbox_table.c.lease_token.like(prefix + "%"))
        )
        return len(rows.all())


async def _wait_for_lease(engine: AsyncEngine, prefix: str, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await _leased_rows(engine, prefix):
            return True
        await asyncio.sleep(0.005)
    return False


def _post_orders(client: TestClient, count: int) -> list[int]:
    body = {"customer_id": "c", "items": [{"sku": "s", "qty": 1, "price": 1}]}
    return [client.post("/v1/orders", json=body).status_code for _ in range(count)]


def _outbox_depth(client: TestClient) -> int:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    return client.portal.call(outbox.outbox_stats, engine).depth  # type: ignore[union-attr]


def _xlen(url: str) -> int:
    import redis

    with redis.Redis.from_url(url) as r:
        return int(r.xlen(STREAM))


def test_orders_keep_coming_while_redis_is_down_then_everything_is_relayed(
    database_url: str, tmp_path: Path
) -> None:
    server = EmbeddedRedis(tmp_path / "redis").start()
    settings = OrderSettings(database_url=database_url, relay_backoff_max=0.5)
    with TestClient(create_app(settings, redis_url=server.url)) as client:
        assert _post_orders(client, 20) == [201] * 20
        wait_for(lambda: _outbox_depth(client) == 0, 10, "an empty outbox")
        server.kill()
        assert _post_orders(client, 200) == [201] * 200  # zero orders refused
        time.sleep(1.0)
        assert _outbox_depth(client) == 200
        server = EmbeddedRedis(server.data_dir, port=server.port).start()  # Redis is back
        wait_for(lambda: _outbox_depth(client) == 0, 15, "an empty outbox")
        assert "trackrelay_relay_errors_total" in client.get("/metrics").text
    assert _xlen(server.url) == 220
    server.stop()


def test_orders_keep_coming_while_redis_refuses_writes(
    database_url: str, redis_server: EmbeddedRedis
) -> None:
    import redis

    settings = OrderSettings(database_url=database_url, relay_backoff_max=0.5)
    admin = redis.Redis.from_url(redis_server.url)
    with TestClient(create_app(settings, redis_url=redis_server.url)) as client:
        admin.config_set("maxmemory", "1")  # every XADD now fails with OOM
        assert _post_orders(client, 50) == [201] * 50
        time.sleep(1.0)
        assert _outbox_depth(client) == 50
        assert admin.xlen(STREAM) == 0
        admin.config_set("maxmemory", "0")
        wait_for(lambda: _outbox_depth(client) == 0, 15, "an empty outbox")
    assert admin.xlen(STREAM) == 50
    admin.close()


@pytest.mark.postgres
def test_database_down_is_503_never_201(tmp_path: Path) -> None:
    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster(tmp_path / "pg").start()
    try:
        settings = OrderSettings(database_url=cluster.url(), run_relay=False)
        with TestClient(create_app(settings)) as client:
            assert _post_orders(client, 1) == [201]
            cluster.pg_stop()
            r = client.post(
                "/v1/orders",
                json={"customer_id": "c", "items": [{"sku": "s", "qty": 1, "price": 1}]},
            )
            assert r.status_code == 503
            assert "not accepted" in r.json()["detail"]
            assert client.get("/readyz").status_code == 503
            cluster.pg_start()
            wait_for(lambda: client.get("/readyz").status_code == 200, 15, "ready again")
            assert _post_orders(client, 1) == [201]
    finally:
        cluster.stop()


@pytest.mark.postgres
def test_postgresql_restarted_under_concurrent_orders_is_503_never_500(tmp_path: Path) -> None:
    """PostgreSQL stopped (fast) and started again five times while four clients keep
    ordering, two of them with an Idempotency-Key (its look-up goes through SQLAlchemy,
    the insert through asyncpg's own pool): every answer is 201 or 503, and orders are
    accepted again after each start. (A connection dropped mid-statement once came back
    as asyncpg's ``InternalClientError``, a 500, and could poison its pool slot.)"""
    import threading

    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster(tmp_path / "pg").start()
    answers: collections.Counter[int] = collections.Counter()
    counting = threading.Lock()
    stop = threading.Event()
    try:
        settings = OrderSettings(database_url=cluster.url(), run_relay=False)
        app = create_app(settings)
        with TestClient(app, raise_server_exceptions=False) as client:

            def order(n: int, keyed: bool) -> int:
                body = {"customer_id": f"c{n}", "items": [{"sku": "s", "qty": 1, "price": 1}]}
                headers = {"Idempotency-Key": f"k-{n}"} if keyed else {}
                r = client.post("/v1/orders", json=body, headers=headers)
                status: int = r.status_code
                return status

            def keep_ordering(k: int) -> None:
                n = 0
                while not stop.is_set():
                    status = order(k * 1_000_000 + n, keyed=k % 2 == 0)
                    with counting:
                        answers[status] += 1
                    n += 1

            def accepted() -> int:
                with counting:
                    return answers[201]

            clients = [threading.Thread(target=keep_ordering, args=(k,)) for k in range(4)]
            for t in clients:
                t.start()
            try:
                for restart in range(5):
                    before = accepted()

                    def more(a: int = before) -> bool:
                        return accepted() > a + 20

                    wait_for(more, 30, f"orders before restart {restart}")
                    cluster.pg_stop()
                    time.sleep(0.3)
                    cluster.pg_start()
                before = accepted()
                wait_for(lambda: accepted() > before + 20, 30, "orders after the last")
            finally:
                stop.set()
                for t in clients:
                    t.join(timeout=60)
            assert not [t for t in clients if t.is_alive()], "a request never ended"
    finally:
        cluster.stop()
    assert set(answers) <= {201, 503}, answers
    assert answers[503] > 0  # the restarts were met


@pytest.mark.postgres
def test_the_relay_rides_out_a_postgresql_restart_and_catches_up(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL stopped under the order service's relay, then started again: the relay
    names the store that failed, stays alive, and relays every order once it is back."""
    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster(tmp_path / "pg").start()
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    try:
        settings = OrderSettings(database_url=cluster.url(), relay_backoff_max=0.5)
        with TestClient(create_app(settings, redis_url=server.url)) as client:
            assert _post_orders(client, 50) == [201] * 50
            wait_for(lambda: _outbox_depth(client) == 0, 15, "an empty outbox")
            cluster.pg_stop()
            # Two whole relay rounds and a statistics refresh with the database gone.
            relay: OutboxRelay = client.app.state.relay  # type: ignore[attr-defined]
            failures = relay.backoff.failures
            wait_for(lambda: relay.backoff.failures >= failures + 2, 15, "failed relay rounds")
            time.sleep(1.5)
            assert client.get("/healthz").status_code == 200  # the relay is alive
            assert "relay: database unavailable" in caplog.text
            assert "relay: redis unavailable" not in caplog.text
            cluster.pg_start()
            wait_for(lambda: client.get("/readyz").status_code == 200, 15, "ready again")
            assert _post_orders(client, 50) == [201] * 50
            wait_for(lambda: _outbox_depth(client) == 0, 15, "an empty outbox")
            assert client.get("/healthz").status_code == 200
        assert _xlen(server.url) == 100
    finally:
        server.stop()
        cluster.stop()


def test_a_dead_relay_task_fails_healthz(
    redis_server: EmbeddedRedis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A background task that dies is not hidden behind a healthy /healthz."""

    async def broken(self: OutboxRelay, stop: asyncio.Event) -> None:
        raise RuntimeError("a bug the relay did not expect")

    monkeypatch.setattr(OutboxRelay, "run", broken)
    settings = OrderSettings(database_url=f"sqlite:///{tmp_path / 'o.db'}")
    with TestClient(create_app(settings, redis_url=redis_server.url)) as client:
        wait_for(lambda: client.get("/healthz").status_code == 503, 10, "an unhealthy service")
        body = client.get("/healthz").json()
        assert body["status"] == "failed"
        assert "outbox-relay" in body["detail"]
        assert "RuntimeError" in body["detail"]


async def test_a_redis_killed_right_after_a_relay_batch_keeps_every_event(
    tmp_path: Path,
) -> None:
    """The relay deletes outbox rows only after Redis acknowledged their XADDs, and the
    queue's Redis appends them to its AOF before it answers: SIGKILL the moment the
    outbox is empty, start it again from its files, and every event is there."""
    url = resolve_database_url(f"sqlite:///{tmp_path / 'orders.db'}", tmp_path)
    await asyncio.to_thread(migrate.upgrade, url)
    server = EmbeddedRedis(tmp_path / "aof-redis").start()  # AOF, appendfsync always
    engine = database.make_engine(url)
    redis = Redis.from_url(server.url)
    stop = asyncio.Event()
    relay = OutboxRelay(engine, redis, OrderSettings(relay_batch_size=500), owner="r")
    expected = await insert_orders(engine, 2_000)
    task = asyncio.create_task(relay.run(stop))
    try:
        while (await outbox.outbox_stats(engine)).depth:  # noqa: ASYNC110 (polls the database)
            await asyncio.sleep(0)  # poll as fast as the loop goes: kill at the first empty
        server.kill()  # SIGKILL: no shutdown, no final fsync
    finally:
        stop.set()
        await task
        await redis.aclose()
    server = EmbeddedRedis(server.data_dir, port=server.port).start()
    try:
        again = Redis.from_url(server.url)
        assert set(await stream_event_ids(again)) == expected
        await again.aclose()
    finally:
        server.stop()
        await engine.dispose()
