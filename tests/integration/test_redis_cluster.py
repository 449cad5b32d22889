"""The queue on a real Redis Cluster (three primaries): what the README promises for one
Redis holds there too. Every key a script touches shares its hash tag, so each script
runs on the one node that serves that slot; the quota's own tests run on a cluster too
(tests/integration/test_quota.py)."""

from __future__ import annotations

import asyncio
import functools
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from tests.integration.conftest import Sim, add_events, run_cli, wait_for
from tests.integration.test_quota import outbox_rows
from tests.support.redis_cluster import LocalRedisCluster, SyncQueue, sync_client
from trackrelay.config.settings import OrderSettings
from trackrelay.control.controller import Observation
from trackrelay.events import Event, event_id_for, shard_of
from trackrelay.local.processes import spawn_role, stop_all
from trackrelay.loop.observe import observe
from trackrelay.orders.app import create_app
from trackrelay.queue import client
from trackrelay.queue.keys import BUDGET_KEY, CONSUMER_GROUP, SHARDS_KEY, first_shards
from trackrelay.runtime.errors import StartupError
from trackrelay.runtime.ports import free_port

ORDERS = 240


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(tmp_path / "cluster", primaries=3) as c:
        yield c


@pytest.mark.parametrize("shards", [1, 4])
def test_orders_reach_analytics_exactly_once_through_a_cluster_though_a_forwarder_dies(
    cluster: LocalRedisCluster, shards: int, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    """With 4 shards too: forwarders started before the order service raised the shard
    count follow it, and a forwarder killed holding batches of several shards loses
    nothing; every order's events go to one shard, and the shards to several nodes."""
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
    for name in ("victim", "survivor"):  # both reading the one shard the queue has yet
        log = tmp_path / f"{name}.log"
        wait_for(functools.partial(says, log, "lanes"), 30, f"{name} reading the queue")
    admin = sync_client(cluster.url)
    settings = OrderSettings(data_dir=tmp_path, queue_quota=4 * 2**20, queue_shards=shards)
    every = first_shards(shards)
    try:
        with TestClient(create_app(settings, redis_url=cluster.url)) as orders:
            for n in range(ORDERS):
                items = [{"sku": f"sku-{(n + k) % 30}", "qty": 1, "price": 100} for k in (0, 1)]
                r = orders.post("/v1/orders", json={"customer_id": f"c{n}", "items": items})
                assert r.status_code == 201, r.text
                if n == ORDERS // 2:
                    wait_for(
                        lambda: held_by(admin, "victim", shards) > 0,
                        20,
                        "the victim holding a batch",
                    )
                    procs[0].send_signal(signal.SIGKILL)
            sim.fault(mode="healthy")
            wait_for(
                lambda: sim.state()["lines"] >= 2 * ORDERS,
                90,
                "analytics to count every line",
                lambda: f"state {sim.state()}, streams {[admin.xlen(s.stream) for s in every]}",
            )
            wait_for(lambda: all(admin.xlen(s.stream) == 0 for s in every), 20, "empty streams")
    finally:
        stop_all(procs)
    state = sim.state()
    assert state["lines"] == 2 * ORDERS  # none lost; a line counted twice would show here
    assert state["overlaps"] == 0, f"{state['overlaps']} events were in two pushes at once"
    assert all(admin.xlen(s.dlq) == 0 for s in every)
    assert float(admin.get(BUDGET_KEY) or 0) == 400.0
    # a shard's keys live together on one primary, the budget's wherever its tag hashes
    assert all(cluster.node_of(s.stream) is cluster.node_of(s.dlq) for s in every)
    if shards > 1:
        assert int(admin.get(SHARDS_KEY) or 0) == shards
        counts = [added(admin, s.stream) for s in every]
        assert sum(counts) == 2 * ORDERS  # each event added once, to one shard: its order's
        assert all(n > 0 for n in counts), counts
        assert len({cluster.node_of(s.stream).port for s in every}) > 1  # over the nodes
        assert f"the queue has {shards} shards now" in (tmp_path / "survivor.log").read_text()
    admin.close()


def says(log: Path, text: str) -> bool:
    return text in log.read_text()


def added(admin: SyncQueue, stream: str) -> int:
    """Entries ever added to ``stream`` (deleted ones too)."""
    try:
        info: Any = admin.xinfo_stream(stream)
    except redis.ResponseError:  # never created
        return 0
    return int(info["entries-added"])


def held_by(admin: SyncQueue, consumer: str, shards: int = 1) -> int:
    """Entries ``consumer`` holds, over every shard."""
    held = 0
    for shard in first_shards(shards):
        try:
            rows: Any = admin.xinfo_consumers(shard.stream, CONSUMER_GROUP)
        except redis.ResponseError:  # no group yet
            continue
        held += sum(int(r["pending"]) for r in rows if r["name"] in (consumer, consumer.encode()))
    return held


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


@pytest.mark.parametrize("shards", [1, 4])
def test_the_controller_observes_a_queue_on_a_cluster(
    cluster: LocalRedisCluster, shards: int, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    """Backlog, queue memory and every forwarder's published view, read across the nodes
    (the views' keys hash to any slot; a shard's to one). With 4 shards, the backlog is
    the lag summed over them: a split backlog is as deep as its total (the deepest
    shard alone would under-scale)."""
    sim = start_sim()
    sim.fault(mode="down")  # the backlog stays
    env = {"TRACKRELAY_REDIS_URL": cluster.url, "TRACKRELAY_ANALYTICS_URL": sim.url}
    procs = [
        spawn_role(["forwarder", "--consumer-name", f"f{n}"], env, tmp_path / f"f{n}.log")
        for n in range(3)
    ]
    ids = add_events(cluster.url, 300, shards=shards)

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
    per_shard = [sum(1 for i in ids if shard_of(i, shards) == n) for n in range(shards)]
    assert max(per_shard) == 300 if shards == 1 else max(per_shard) < 300
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


def cluster_event_ids(url: str, shards: int) -> list[str]:
    """Every event id in every shard's stream, read through a fresh cluster client."""
    admin = sync_client(url)
    try:
        ids = []
        for shard in first_shards(shards):
            rows: Any = admin.xrange(shard.stream)
            ids += [Event.from_json(fields[b"e"]).event_id for _, fields in rows]
        return ids
    finally:
        admin.close()


def test_a_primary_killed_under_load_fails_over_and_loses_no_event(tmp_path: Path) -> None:
    """Three primaries with a replica each, 4 shards, ``queue_replicas`` 1: the replica
    of one shard's primary stalled (SIGSTOP) and its link cut, so it misses what that
    primary adds next (a stall alone would not: the socket's buffer keeps it); orders
    go on, and the rows whose events only that primary has stay in the outbox. The
    primary killed under load, its replica woken and promoted by the cluster: every
    line of every order is in a stream (the batches the dead primary had are sent
    again, the same ids: counted here). With ``queue_replicas`` 0 the promoted replica
    lacks those events: this test fails."""
    shards = 4
    every = first_shards(shards)
    settings = OrderSettings(
        data_dir=tmp_path,
        queue_shards=shards,
        queue_replicas=1,
        queue_replica_timeout=0.2,
        queue_replica_wait_max=5,  # the promoted replica alone is waited for this long
    )
    with (
        LocalRedisCluster(tmp_path / "cluster", primaries=3, replicas=1) as cluster,
        TestClient(create_app(settings, redis_url=cluster.url)) as orders,
    ):
        ids = post_orders(orders, 0, 20)
        wait_for(lambda: outbox_rows(orders) == 0, 20, "the confirmed rows deleted")
        primary = cluster.node_of(every[0].stream)
        replica = cluster.replica_of(primary)
        assert replica.process is not None
        on_primary = {s.number for s in every if cluster.node_of(s.stream) is primary}
        replica.process.send_signal(signal.SIGSTOP)  # that primary's replication stops
        with cluster.client(cluster.nodes.index(primary)) as r:
            assert r.execute_command("CLIENT KILL TYPE replica") == 1  # and its link goes
        ids += post_orders(orders, 20, 30)
        time.sleep(1.0)  # five WAITs' time: none of them confirmed
        kept = outbox_rows(orders)
        later = [shard_of(event_id_for(i, 0), shards) for i in ids[20:]]
        only_there = 2 * sum(1 for n in later if n in on_primary)
        primary.kill()  # what only it had dies with it
        replica.process.send_signal(signal.SIGCONT)
        ids += post_orders(orders, 50, 30)  # orders never wait for the queue
        wait_for(lambda: cluster.node_of(every[0].stream) is replica, 30, "the failover")
        ids += post_orders(orders, 80, 20)
        wait_for(
            lambda: outbox_rows(orders) == 0,
            60,
            "the kept rows relayed again (after wait_max, unconfirmed)",
            lambda: f"outbox {outbox_rows(orders)}",
        )
        view = orders.app.state.relay.view()  # type: ignore[attr-defined]
        seen = cluster_event_ids(cluster.url, shards)
    assert only_there > 0 and kept >= only_there, (kept, only_there)
    assert set(seen) == {event_id_for(i, line) for i in ids for line in (0, 1)}  # none lost
    duplicates = len(seen) - len(set(seen))
    assert duplicates <= kept, duplicates  # only kept rows are sent again
    assert view["replicas"]["confirmed"] > 0
    assert view["replicas"]["unconfirmed"] > 0  # the promoted replica alone is not waited for


def post_orders(orders: TestClient, first: int, count: int) -> list[str]:
    """``count`` two-line orders, every one accepted; their ids."""
    ids = []
    for n in range(first, first + count):
        items = [{"sku": f"sku-{n % 7}", "qty": 1, "price": 100} for _ in (0, 1)]
        r = orders.post("/v1/orders", json={"customer_id": f"c{n}", "items": items})
        assert r.status_code == 201, r.text
        ids.append(r.json()["order_id"])
    return ids
