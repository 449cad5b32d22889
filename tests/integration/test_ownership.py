"""One owner per event, even when a forwarder is frozen mid-batch and wakes up later.

The fault that broke it: a forwarder holding a batch is stopped (SIGSTOP) past
``CLAIM_IDLE``, another takes its entries over, analytics comes back slow, and the
frozen one is resumed (SIGCONT). The simulator counts an *overlap* whenever an
event id arrives while another open request still holds it.
"""

from __future__ import annotations

import functools
import re
import signal
import subprocess
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.conftest import Sim, add_events, fwd_env, queue_empty, wait_for
from tests.support.redis_cluster import QueueServer, sync_client
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.queue.keys import CONSUMER_GROUP, STREAM, first_shards
from trackrelay.runtime.ports import free_port

CLAIM_IDLE = 3.0


def held_by(server: QueueServer, consumer: str, shards: int = 1) -> int:
    """Entries ``consumer`` holds, over every shard."""
    held = 0
    with sync_client(server.url) as r:
        for shard in first_shards(shards):
            try:
                rows: Any = r.xinfo_consumers(shard.stream, CONSUMER_GROUP)
            except redis.ResponseError:
                continue
            held += sum(
                int(row["pending"]) for row in rows if row["name"] in (consumer, consumer.encode())
            )
    return held


def holds_at_least(server: QueueServer, count: int, shards: int = 1) -> bool:
    return held_by(server, "frozen", shards) >= count


def delivered(sim: Sim, count: int) -> bool:
    return bool(sim.state()["accepted"] == count)


def metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    found = re.findall(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(found[0]) if found else 0.0


@pytest.mark.parametrize(
    ("queue_store", "shards"),
    [("standalone", 1), ("cluster", 1), ("cluster", 4)],
    indirect=["queue_store"],
)
def test_a_frozen_forwarder_never_pushes_what_was_taken_over(
    queue_store: QueueServer, shards: int, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    """With 4 shards, on three primaries: the guarantee holds in every shard at once."""
    redis_server = queue_store
    sim = start_sim()
    sim.fault(mode="down")
    env = fwd_env(
        redis_server,
        sim,
        TRACKRELAY_BATCH_SIZE="40",
        TRACKRELAY_PUSH_TIMEOUT="1",
        TRACKRELAY_CLAIM_IDLE=str(CLAIM_IDLE),
        TRACKRELAY_REDIS_TIMEOUT="0.5",
        TRACKRELAY_BLOCK_MS="100",
        TRACKRELAY_CLAIM_INTERVAL="0.2",
        TRACKRELAY_BACKOFF_BASE="0.1",
        TRACKRELAY_BACKOFF_MAX="0.3",
    )
    total = len(
        add_events(redis_server.url, 150, prefix="c0-", shards=shards)
    )  # full batches from the start
    port = free_port()
    frozen = spawn_role(
        ["forwarder", "--consumer-name", "frozen", "--metrics-port", str(port)],
        env,
        tmp_path / "frozen.log",
    )
    procs: list[subprocess.Popen[bytes]] = [frozen]
    try:
        wait_http(f"http://127.0.0.1:{port}/healthz", 20, frozen)
        for cycle in range(3):
            sim.fault(mode="down")
            if cycle:
                total += len(add_events(redis_server.url, 150, prefix=f"c{cycle}-", shards=shards))
            # First alone, the victim takes what its window holds (it starts at half
            # a batch, and analytics is down); later the two forwarders share.
            want = 20 if cycle == 0 else 1
            wait_for(
                functools.partial(holds_at_least, redis_server, want, shards), 20, "a held batch"
            )
            if cycle == 0:  # the taker starts once the victim holds the first batches
                procs.append(
                    spawn_role(
                        ["forwarder", "--consumer-name", "taker"], env, tmp_path / "taker.log"
                    )
                )
            frozen.send_signal(signal.SIGSTOP)
            held = held_by(redis_server, "frozen", shards)
            wait_for(
                lambda: held_by(redis_server, "frozen", shards) == 0,
                CLAIM_IDLE * 5,
                "the frozen forwarder's entries taken over",
            )
            sim.fault(mode="slow", latency=0.5)  # requests stay open: overlaps would show
            frozen.send_signal(signal.SIGCONT)
            wait_for(functools.partial(delivered, sim, total), 60, "every event delivered")
            assert held >= want
        wait_for(lambda: queue_empty(redis_server, shards), 20, "an empty stream")
        lost = metric(port, "trackrelay_events_lost_ownership_total")
    finally:
        for p in procs:
            if p.poll() is None:
                p.send_signal(signal.SIGCONT)
        stop_all(procs)
    state = sim.state()
    assert state["overlaps"] == 0, f"{state['overlaps']} events were in two pushes at once"
    assert state["accepted"] == total == 450
    assert lost > 0, "the woken forwarder should have dropped what it lost"
    assert "taken over by another forwarder" in (tmp_path / "frozen.log").read_text()
    assert [p.returncode for p in procs] == [0, 0]


async def test_abandoned_entries_behind_many_live_ones_are_taken_over(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim]
) -> None:
    """XAUTOCLAIM scans at most COUNT x 10 entries a call: the scan must go on from its cursor."""
    import asyncio

    from redis.asyncio import Redis as AsyncRedis

    from trackrelay.config.settings import ForwarderSettings
    from trackrelay.forwarder.sink import HttpSink
    from trackrelay.forwarder.worker import Forwarder

    sim = start_sim()
    add_events(redis_server.url, 1010)
    r = AsyncRedis.from_url(redis_server.url)
    await r.xgroup_create(STREAM, CONSUMER_GROUP, id="0")
    read: Any = await r.xreadgroup(CONSUMER_GROUP, "dead", {STREAM: ">"}, count=1010)
    ids = [i for i, _ in read[0][1]]
    # Ten abandoned entries behind 1000 live ones: idle times are set, not waited for, so
    # the live ones cannot turn idle during the test however slow the machine is.
    await r.xclaim(STREAM, CONSUMER_GROUP, "dead", 0, ids[1000:], idle=120_000, justid=True)
    await r.xclaim(STREAM, CONSUMER_GROUP, "live", 0, ids[:1000], justid=True)
    settings = ForwarderSettings(
        batch_size=10, claim_idle=60, push_timeout=1, redis_timeout=0.5, block_ms=100
    )
    sink = HttpSink(sim.url, 1.0)
    stop = asyncio.Event()
    task = asyncio.create_task(Forwarder(r, sink, settings, consumer="rescuer").run(stop))
    try:
        for _ in range(400):  # up to 20 s; the live entries stay busy for 60
            if (await asyncio.to_thread(sim.state))["accepted"] == 10:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    assert (await asyncio.to_thread(sim.state))["accepted"] == 10
    live = await r.xpending_range(STREAM, CONSUMER_GROUP, "-", "+", 2000, consumername="live")
    assert len(live) == 1000
    await sink.aclose()
    await r.aclose()


async def test_a_stall_inside_the_ownership_check_gives_no_fresh_deadline(
    redis_server: EmbeddedRedis, monkeypatch: Any
) -> None:
    """A forwarder that waited for its budget slot checks ownership again before the push.
    A stall while that check is in flight (simulated: the clock jumps during the call)
    must not give the push a deadline counted from after the stall: ownership was renewed
    when the check was sent, and another forwarder may claim the entries a claim-idle
    later. Every push's deadline is at most push_timeout past the last check's sending."""
    import asyncio
    import time

    from redis.asyncio import Redis as AsyncRedis

    from trackrelay.config.settings import ForwarderSettings
    from trackrelay.control.push_outcome import Outcome, PushResult
    from trackrelay.forwarder.worker import Forwarder
    from trackrelay.queue import streams

    add_events(redis_server.url, 20)
    r = AsyncRedis.from_url(redis_server.url)
    stall = {"seconds": 0.0}
    sent_at: list[float] = []
    pushes: list[tuple[float, float]] = []  # (deadline, last check sent at)

    def clock() -> float:
        return time.monotonic() + stall["seconds"]

    real_refresh = streams.refresh_owned

    async def stalled_refresh(redis: Any, shard: Any, consumer: str, ids: Any) -> set[str]:
        sent_at.append(clock())
        owned = await real_refresh(redis, shard, consumer, ids)
        stall["seconds"] += 2.0  # the process stopped for 2 s while the answer came back
        return owned

    class Sink:
        async def push(self, raw: list[bytes], deadline: float | None = None) -> PushResult:
            assert deadline is not None
            pushes.append((deadline, sent_at[-1] if sent_at else float("-inf")))
            return PushResult(Outcome.ACCEPTED, status=200)

    settings = ForwarderSettings(
        batch_size=10, claim_idle=20, push_timeout=3, block_ms=100, adaptive=False
    )
    forwarder = Forwarder(r, Sink(), settings, consumer="solo", clock=clock)

    async def slot(events: int) -> float:
        return 0.05  # every push waits for a budget slot, then checks ownership again

    forwarder.pacer.reserve = slot  # type: ignore[method-assign]
    stop = asyncio.Event()
    monkeypatch.setattr(streams, "refresh_owned", stalled_refresh)
    try:
        task = asyncio.create_task(forwarder.run(stop))
        for _ in range(200):
            if len(pushes) >= 2:
                break
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
        await r.aclose()
    assert len(pushes) >= 2 and sent_at
    for deadline, checked in pushes:
        assert deadline <= checked + settings.push_timeout + 1e-6, (deadline, checked)
