"""The queue on a real Redis Cluster (three primaries): what the README promises for one
Redis holds there too. Every key a script touches shares its hash tag, so each script
runs on the one node that serves that slot; the quota's own tests run on a cluster too
(tests/integration/test_quota.py)."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from tests.integration.conftest import Sim, add_events, run_cli, wait_for
from tests.support.redis_cluster import LocalRedisCluster, SyncQueue, sync_client
from trackrelay.config.settings import OrderSettings
from trackrelay.control.controller import Observation
from trackrelay.local.processes import spawn_role, stop_all
from trackrelay.loop.observe import observe
from trackrelay.orders.app import create_app
from trackrelay.queue import client
from trackrelay.queue.keys import BUDGET_KEY, CONSUMER_GROUP, DLQ_STREAM, STREAM
from trackrelay.runtime.errors import StartupError
from trackrelay.runtime.ports import free_port

ORDERS = 240


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(tmp_path / "cluster", primaries=3) as c:
        yield c


def test_orders_reach_analytics_exactly_once_through_a_cluster_though_a_forwarder_dies(
    cluster: LocalRedisCluster, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim()
    env = {
        "TRACKRELAY_REDIS_URL": cluster.url,
        "TRACKRELAY_ANALYTICS_URL": sim.url,
        "TRACKRELAY_BATCH_SIZE": "20",
        "TRACKRELAY_CLAIM_IDLE": "3",
        "TRACKRELAY_PUSH_TIMEOUT": "1",
        "TRACKRELAY_REDIS_TIMEOUT": "0.5",
        "TRACKRELAY_CLAIM_INTERVAL": "0.2",
        "TRACKRELAY_BLOCK_MS": "100",
    }
    set_budget = run_cli(["budget", "set", "400"], env)
    assert set_budget.returncode == 0, set_budget.stderr
    sim.fault(mode="slow", latency=0.2)  # pushes stay open: a victim dies holding some
    procs: list[subprocess.Popen[bytes]] = [
        spawn_role(["forwarder", "--consumer-name", name], env, tmp_path / f"{name}.log")
        for name in ("victim", "survivor")
    ]
    admin = sync_client(cluster.url)
    settings = OrderSettings(data_dir=tmp_path, queue_quota=4 * 2**20)
    try:
        with TestClient(create_app(settings, redis_url=cluster.url)) as orders:
            for n in range(ORDERS):
                items = [{"sku": f"sku-{(n + k) % 30}", "qty": 1, "price": 100} for k in (0, 1)]
                r = orders.post("/v1/orders", json={"customer_id": f"c{n}", "items": items})
                assert r.status_code == 201, r.text
                if n == ORDERS // 2:
                    wait_for(lambda: held_by(admin, "victim") > 0, 20, "the victim holding a batch")
                    procs[0].send_signal(signal.SIGKILL)
            sim.fault(mode="healthy")
            wait_for(
                lambda: sim.state()["lines"] >= 2 * ORDERS,
                90,
                "analytics to count every line",
                lambda: f"state {sim.state()}, stream {admin.xlen(STREAM)}",
            )
            wait_for(lambda: admin.xlen(STREAM) == 0, 20, "an empty stream")
    finally:
        stop_all(procs)
    state = sim.state()
    assert state["lines"] == 2 * ORDERS  # none lost; a line counted twice would show here
    assert state["overlaps"] == 0, f"{state['overlaps']} events were in two pushes at once"
    assert admin.xlen(DLQ_STREAM) == 0
    assert float(admin.get(BUDGET_KEY) or 0) == 400.0
    # the queue's keys live together on one primary, the budget's wherever its tag hashes
    assert cluster.node_of(STREAM) is cluster.node_of(DLQ_STREAM)
    admin.close()


def held_by(admin: SyncQueue, consumer: str) -> int:
    try:
        rows: Any = admin.xinfo_consumers(STREAM, CONSUMER_GROUP)
    except redis.ResponseError:  # no group yet
        return 0
    return sum(int(r["pending"]) for r in rows if r["name"] in (consumer, consumer.encode()))


def test_a_cluster_node_that_may_evict_is_refused_by_name(cluster: LocalRedisCluster) -> None:
    """Every node is checked, replicas as well: the one that could delete the stream is named."""
    last = cluster.nodes[-1]
    cluster.command(len(cluster.nodes) - 1, "CONFIG", "SET", "maxmemory-policy", "allkeys-lru")

    async def check() -> str:
        redis = client.connect(cluster.url)
        try:
            await client.check_queue_redis(redis)
        except client.QueueRedisRefused as exc:
            return str(exc)
        finally:
            await redis.aclose()
        return ""

    refused = asyncio.run(check())
    assert f"127.0.0.1:{last.port}" in refused and "allkeys-lru" in refused, refused


def test_the_controller_observes_a_queue_on_a_cluster(
    cluster: LocalRedisCluster, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    """Backlog, queue memory and every forwarder's published view, read across the nodes
    (the views' keys hash to any slot; the queue's to one)."""
    sim = start_sim()
    sim.fault(mode="down")  # the backlog stays
    env = {"TRACKRELAY_REDIS_URL": cluster.url, "TRACKRELAY_ANALYTICS_URL": sim.url}
    procs = [
        spawn_role(["forwarder", "--consumer-name", f"f{n}"], env, tmp_path / f"f{n}.log")
        for n in range(3)
    ]
    add_events(cluster.url, 300)

    async def look() -> Observation:
        redis = client.connect(cluster.url)
        try:
            return await observe(redis, 2**20)
        finally:
            await redis.aclose()

    looks: list[Observation] = []

    def all_three() -> bool:
        looks.append(asyncio.run(look()))
        return len(looks[-1].forwarders) == 3

    try:
        wait_for(all_three, 30, "three forwarders' views", lambda: str(looks[-1:]))
    finally:
        stop_all(procs)
    seen = looks[-1]
    assert seen.lag + seen.pending == 300
    assert {f.name for f in seen.forwarders} == {"f0", "f1", "f2"}
    assert seen.queue_bytes is not None and seen.queue_bytes > 300 * 50


def test_an_unreachable_cluster_is_a_queue_error_like_any_other() -> None:
    """redis-py's cluster client says it reached no node with an error that is no
    RedisError: the order service still starts (orders never wait for the queue), and a
    forwarder is told why and waits for it like for one Redis."""
    url = f"redis+cluster://127.0.0.1:{free_port()}"
    asyncio.run(client.check_queue(url, required=False))  # a warning, not a crash
    with pytest.raises(StartupError, match="cannot reach the queue redis"):
        asyncio.run(client.check_queue(url, required=True))
