"""A sharded queue: what only shards have (the count the queue records, a DLQ a shard).
What the README promises for one stream is tested with four shards on a Redis
Cluster's three primaries beside the one-stream runs: test_redis_cluster.py (exactly
once through a SIGKILL, the summed backlog), test_quota.py (the quota, shedding exact),
test_ownership.py (a frozen forwarder)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Sim, add_events, run_cli, wait_for
from tests.support.redis_cluster import LocalRedisCluster, sync_client
from trackrelay.events import Event, shard_of
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all
from trackrelay.queue import client, shards
from trackrelay.queue.keys import EVENT_FIELD, SHARDS_KEY, first_shards

ORDERS = 240
SHARDS = 4


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[LocalRedisCluster]:
    with LocalRedisCluster(tmp_path / "cluster", primaries=3) as c:
        yield c


def test_the_shard_count_is_raised_never_lowered(tmp_path: Path) -> None:
    """A process started with fewer shards than the queue has reads them all: a shard once
    written to is never left unread."""

    async def record() -> list[int]:
        redis = client.connect(server.url)
        try:
            return [
                await shards.recorded(redis),
                await shards.record(redis, 1),
                await shards.record(redis, 4),
                await shards.record(redis, 2),
                await shards.recorded(redis),
            ]
        finally:
            await redis.aclose()

    with EmbeddedRedis(tmp_path / "redis", appendonly=False) as server:
        assert asyncio.run(record()) == [1, 1, 4, 4, 4]
        with sync_client(server.url) as admin:
            admin.set(SHARDS_KEY, "65")

        async def broken() -> int:
            redis = client.connect(server.url)
            try:
                return await shards.recorded(redis)
            finally:
                await redis.aclose()

        with pytest.raises(ValueError, match="1 to 64 shards"):
            asyncio.run(broken())


def test_dead_letters_of_every_shard_are_listed_and_replayed_to_their_shard(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    """Four shards on one Redis: an event analytics refuses goes to its own shard's DLQ,
    ``dlq list`` shows every shard's with its number, ``dlq replay`` puts each back on
    the stream of the shard it came from."""
    sim = start_sim()
    sim.fault(mode="healthy", poison_sku="poison", poison_status=500)
    ids = add_events(redis_server.url, 200, shards=SHARDS)
    bad: dict[int, str] = {}
    n = 0
    while len(bad) < SHARDS:  # one refused event in every shard
        bad.setdefault(shard_of(f"bad{n}:0", SHARDS), f"bad{n}:0")
        n += 1
    every = first_shards(SHARDS)
    with sync_client(redis_server.url) as admin:
        for number, event_id in bad.items():
            ev = Event(event_id, event_id[:-2], "poison", 1, 1.0, "2026-01-01T00:00:00Z")
            admin.xadd(every[number].stream, {EVENT_FIELD: ev.to_json()})
        env = {"TRACKRELAY_REDIS_URL": redis_server.url, "TRACKRELAY_ANALYTICS_URL": sim.url}
        procs = [spawn_role(["forwarder", "--batch-size", "50"], env, tmp_path / "f.log")]
        try:
            wait_for(
                lambda: sum(int(admin.xlen(s.dlq)) for s in every) == SHARDS,
                60,
                "a dead letter in every shard",
                lambda: f"DLQs {[admin.xlen(s.dlq) for s in every]}, state {sim.state()}",
            )
            wait_for(lambda: sim.state()["accepted"] == len(ids), 30, "the rest delivered")
        finally:
            stop_all(procs)
        listed = run_cli(["dlq", "list"], env)
        assert listed.returncode == 0, listed.stderr
        rows = [json.loads(line) for line in listed.stdout.splitlines()]
        assert {r["shard"]: Event.from_json(r["event"]).event_id for r in rows} == bad
        replayed = run_cli(["dlq", "replay"], env)
        assert replayed.returncode == 0, replayed.stderr
        assert f"replayed {SHARDS} events" in replayed.stdout
        for number, event_id in bad.items():
            entries: Any = admin.xrange(every[number].stream)
            assert [Event.from_json(f[b"e"]).event_id for _, f in entries] == [event_id]
            assert admin.xlen(every[number].dlq) == 0
