"""The queue on a primary/replica pair found through Sentinel (``redis+sentinel://``): a
primary that dies is replaced, and the relay goes on into the new one."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from fastapi.testclient import TestClient

from tests.integration.conftest import wait_for
from tests.support.redis_cluster import LocalSentinelPair
from trackrelay.config.settings import OrderSettings
from trackrelay.orders.app import create_app
from trackrelay.queue import client
from trackrelay.queue.keys import STREAM


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[LocalSentinelPair]:
    with LocalSentinelPair(tmp_path / "pair") as p:
        yield p


def stream_length(port: int) -> int:
    try:
        with redis.Redis(port=port, socket_timeout=2) as r:
            return int(r.xlen(STREAM))
    except redis.RedisError:
        return -1


def post(orders: TestClient, first: int, count: int) -> None:
    for n in range(first, first + count):
        items = [{"sku": f"sku-{n % 7}", "qty": 1, "price": 100} for _ in (0, 1)]
        r = orders.post("/v1/orders", json={"customer_id": f"c{n}", "items": items})
        assert r.status_code == 201, r.text


def test_the_relay_follows_a_failover_to_the_replica(
    pair: LocalSentinelPair, tmp_path: Path
) -> None:
    async def checked() -> str:
        queue = client.connect(pair.url)
        try:
            return (await client.check_queue_redis(queue)).describe()
        finally:
            await queue.aclose()

    assert "noeviction" in asyncio.run(checked())  # the primary it found was checked
    settings = OrderSettings(data_dir=tmp_path)
    with TestClient(create_app(settings, redis_url=pair.url)) as orders:
        post(orders, 0, 50)
        # on the replica too before the primary dies: what a failover may not lose
        wait_for(lambda: stream_length(pair.replica.port) == 100, 20, "100 events replicated")
        pair.primary.kill()
        post(orders, 50, 50)  # orders never wait for the queue
        wait_for(lambda: pair.primary_port() == pair.replica.port, 30, "the Sentinel's failover")
        wait_for(
            lambda: stream_length(pair.replica.port) == 200,
            60,
            "every event in the new primary",
            lambda: f"{stream_length(pair.replica.port)} entries",
        )
