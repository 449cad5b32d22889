"""A commit wakes the relay (``relay_wakeups``, on by default): its rows reach the
stream long before the relay would poll.

Each test sets ``relay_idle_seconds`` to a minute and waits a few seconds at most, so
only a wake-up can move the rows in time: the order route's own (one process), or a
PostgreSQL notification at commit (another process's orders, a restarted database).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.integration.conftest import insert_orders, stream_event_ids, wait_for
from tests.support.postgres import PostgresCluster
from trackrelay.config.settings import OrderSettings, resolve_database_url
from trackrelay.db import engine as database
from trackrelay.db import migrate
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.orders.app import create_app
from trackrelay.relay.relay import OutboxRelay

POLL = 60.0
"""The relay's poll in these tests: far beyond any wait here."""
SOON = 5.0
"""Seconds a woken relay may take to move a commit's rows (a busy test machine included)."""


def test_an_order_taken_wakes_the_relay_in_its_process(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    settings = OrderSettings(
        database_url=resolve_database_url(database_url, tmp_path),
        relay_idle_seconds=POLL,
        relay_wakeups=True,
    )
    with TestClient(create_app(settings, redis_url=redis_server.url)) as client:
        time.sleep(0.5)  # the relay's first round is done: it sleeps on its poll
        for n in range(3):
            body = {"customer_id": f"c{n}", "items": [{"sku": "a", "qty": 1, "price": 5}]}
            assert client.post("/v1/orders", json=body).status_code == 201
            wait_for(functools.partial(_has, redis_server.url, n + 1), SOON, f"event {n + 1}")
        # each event's time from its order to the stream, observed as the relay moved it
        metrics = client.get("/metrics").text
        assert "trackrelay_relay_delay_seconds_count 3.0" in metrics
        assert 'trackrelay_relay_delay_seconds_bucket{le="60.0"} 3.0' in metrics


@dataclass
class Listening:
    relay: OutboxRelay
    redis: Redis
    writer: AsyncEngine
    """Another engine on the same database: the orders of another process."""


@contextlib.asynccontextmanager
async def relay_listening(url: str, server: EmbeddedRedis) -> AsyncIterator[Listening]:
    """A relay that polls once a minute, running until the block ends, its listen
    session open."""
    redis = Redis.from_url(server.url)
    settings = OrderSettings(relay_idle_seconds=POLL, relay_backoff_max=0.5, relay_wakeups=True)
    relay = OutboxRelay(database.make_engine(url), redis, settings, database_url=url)
    writer = database.make_engine(url)
    stop = asyncio.Event()
    task = asyncio.create_task(relay.run(stop))
    try:
        await _until(lambda: relay.wakeup.listening, 15, "a listen session")
        yield Listening(relay, redis, writer)
    finally:
        stop.set()
        await task
        await redis.aclose()
        await writer.dispose()
        await relay.engine.dispose()


async def _until(cond: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.02)


async def _stream_holds(redis: Redis, expected: set[str], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while set(await stream_event_ids(redis)) != expected:
        if time.monotonic() > deadline:
            got = len(set(await stream_event_ids(redis)))
            raise AssertionError(f"{got} of {len(expected)} events after {timeout}s")
        await asyncio.sleep(0.02)


@pytest.mark.postgres
async def test_another_process_commit_wakes_the_relay_through_postgresql(
    postgres: PostgresCluster, redis_server: EmbeddedRedis
) -> None:
    """The orders come from another engine (another service's): nothing in the relay's
    process knows of them, so only the notification at their commit can wake it."""
    url = resolve_database_url(postgres.create_database(), Path())
    await asyncio.to_thread(migrate.upgrade, url)
    async with relay_listening(url, redis_server) as it:
        await asyncio.sleep(0.5)  # past the round the session's start began
        expected = await insert_orders(it.writer, 20)
        await _stream_holds(it.redis, expected, SOON)


@pytest.mark.postgres
async def test_the_listen_session_comes_back_after_a_postgresql_restart(
    tmp_path: Path, redis_server: EmbeddedRedis
) -> None:
    cluster = PostgresCluster(tmp_path / "pg").start()
    url = resolve_database_url(cluster.url(), tmp_path)
    await asyncio.to_thread(migrate.upgrade, url)
    try:
        async with relay_listening(url, redis_server) as it:
            await asyncio.to_thread(cluster.pg_stop)
            lost = "the session to be found lost"
            await _until(lambda: not it.relay.wakeup.listening, 15, lost)
            await asyncio.to_thread(cluster.pg_start)
            await _until(lambda: it.relay.wakeup.listening, 30, "a listen session again")
            await asyncio.sleep(0.5)
            expected = await insert_orders(it.writer, 20)
            await _stream_holds(it.redis, expected, SOON)
    finally:
        cluster.stop()


def _has(url: str, entries: int) -> bool:
    return _xlen(url) == entries


def _xlen(url: str) -> int:
    import redis

    from trackrelay.queue.keys import STREAM

    with redis.Redis.from_url(url) as r:
        return int(r.xlen(STREAM))
