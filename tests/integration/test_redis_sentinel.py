"""The queue on a primary/replica pair found through Sentinel (``redis+sentinel://``): a
primary that dies is replaced, and the relay goes on into the new one."""

from __future__ import annotations

import asyncio
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from tests.integration.conftest import wait_for
from tests.integration.test_quota import outbox_rows
from tests.support.redis_cluster import LocalSentinelPair
from trackrelay.config.settings import OrderSettings
from trackrelay.events import Event
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


def event_ids(port: int) -> list[str]:
    with redis.Redis(port=port, socket_timeout=5) as r:
        rows: Any = r.xrange(STREAM)
    return [Event.from_json(fields[b"e"]).event_id for _, fields in rows]


def test_rows_wait_for_the_replica_so_a_failover_loses_no_event(
    pair: LocalSentinelPair, tmp_path: Path
) -> None:
    """With ``queue_replicas`` 1, the outbox keeps every row whose event the replica does
    not have yet: the replica stalled (SIGSTOP), the primary killed, the replica
    promoted, every line reaches it (some twice: the batch the primary had and the
    replica missed is sent again, with the same ids, and counted here)."""
    settings = OrderSettings(
        data_dir=tmp_path,
        queue_replicas=1,
        queue_replica_timeout=0.2,
        queue_replica_wait_max=3,  # the promoted replica alone is waited for this long
    )
    assert pair.replica.process is not None
    with TestClient(create_app(settings, redis_url=pair.url)) as orders:
        post(orders, 0, 20)
        wait_for(lambda: stream_length(pair.replica.port) == 40, 20, "40 events replicated")
        wait_for(lambda: outbox_rows(orders) == 0, 20, "the confirmed rows deleted")
        pair.replica.process.send_signal(signal.SIGSTOP)  # replication stops
        post(orders, 20, 30)
        wait_for(lambda: stream_length(pair.primary.port) > 40, 20, "a batch on the primary")
        time.sleep(1.0)  # five WAITs' time: none of them confirmed
        kept = outbox_rows(orders)
        pair.primary.kill()  # the 60 events only it had die with it
        pair.replica.process.send_signal(signal.SIGCONT)
        wait_for(lambda: pair.primary_port() == pair.replica.port, 30, "the Sentinel's failover")
        wait_for(lambda: outbox_rows(orders) == 0, 60, "the kept rows relayed again")
        relay = orders.app.state.relay  # type: ignore[attr-defined]
        view = relay.view()
    ids = event_ids(pair.replica.port)
    assert kept == 60, "rows were deleted before the replica had their events"
    assert len(set(ids)) == 100  # none of the 50 orders' lines lost
    # At most the batch the primary had is there twice: what it had sent to the stalled
    # replica's socket before it died, the replica read when it woke; the relay sent it
    # again (at least once, the same ids).
    duplicates = len(ids) - len(set(ids))
    assert duplicates <= 60, duplicates
    assert view["replicas"]["confirmed"] > 0
    # the promoted replica alone: batches after the failover are not waited for
    assert view["replicas"]["unconfirmed"] > 0
