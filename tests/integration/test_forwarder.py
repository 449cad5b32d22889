"""Forwarders against a real Redis and the simulator, as real processes.

No event in flight in two forwarders at once; nothing lost when forwarders are
killed; no hot loop against a dead analytics; poison events isolated in the DLQ.
"""

from __future__ import annotations

import asyncio
import functools
import json
import re
import signal
import subprocess
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis
from redis.asyncio import Redis as AsyncRedis

from tests.integration.conftest import (
    Sim,
    add_events,
    fwd_env,
    poll_until,
    queue_empty,
    run_cli,
    wait_for,
)
from trackrelay.config.settings import ForwarderSettings
from trackrelay.events import Event
from trackrelay.forwarder.sink import HttpSink
from trackrelay.forwarder.worker import Forwarder
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.queue.keys import BUDGET_KEY, DLQ_STREAM, FORWARDER_STATS_PREFIX, STREAM
from trackrelay.runtime.ports import free_port


def test_several_forwarders_never_hold_the_same_event_at_once(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim("--overhead", "0.002")
    events = 20_000
    add_events(redis_server.url, events)
    env = fwd_env(redis_server, sim, TRACKRELAY_BATCH_SIZE="100")
    procs = [
        spawn_role(["forwarder", "--consumer-name", f"f{i}"], env, tmp_path / "f.log")
        for i in range(3)
    ]
    try:
        wait_for(lambda: sim.state()["accepted"] == events, 120, "all events at analytics")
    finally:
        stop_all(procs)
    state = sim.state()
    assert state["overlaps"] == 0
    assert state["duplicates"] == 0
    assert queue_empty(redis_server)
    assert [p.returncode for p in procs] == [0, 0, 0]  # SIGTERM is a clean exit


def test_kill_9_forwarders_mid_batch_loses_nothing(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim("--overhead", "0.1")  # every push is in flight for 100 ms or more
    events, batch = 20_000, 100
    add_events(redis_server.url, events)
    env = fwd_env(
        redis_server,
        sim,
        TRACKRELAY_BATCH_SIZE=str(batch),
        TRACKRELAY_CONCURRENCY="1",
        TRACKRELAY_PUSH_TIMEOUT="1",
        TRACKRELAY_CLAIM_IDLE="3",
        TRACKRELAY_REDIS_TIMEOUT="0.5",
        TRACKRELAY_BLOCK_MS="200",
        TRACKRELAY_CLAIM_INTERVAL="0.5",
    )
    log = tmp_path / "f.log"
    steady = spawn_role(["forwarder", "--consumer-name", "steady"], env, log)
    victims: list[subprocess.Popen[bytes]] = []
    kills_mid_batch = 0
    try:
        for n in range(5):
            name = f"victim{n}"
            victim = spawn_role(["forwarder", "--consumer-name", name], env, log)
            victims.append(victim)
            holding = poll_until(functools.partial(_holds_some, redis_server, name), 20)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            if holding and _held_by(redis_server, name) > 0:
                kills_mid_batch += 1
        wait_for(lambda: sim.state()["accepted"] == events, 120, "all events at analytics")
        wait_for(lambda: queue_empty(redis_server), 30, "an empty stream")
    finally:
        stop_all([steady, *victims])
    assert kills_mid_batch >= 1, "no forwarder was killed while it held a batch"
    assert "took over" in log.read_text()  # the dead consumers' batches were reclaimed
    state = sim.state()
    # Duplicates are only what a dead consumer had in flight: one batch per kill at most.
    assert state["duplicates"] <= 5 * batch
    assert state["overlaps"] <= 5 * batch


def _held_by(server: EmbeddedRedis, consumer: str) -> int:
    """Entries delivered to ``consumer`` and not yet acknowledged."""
    with redis.Redis.from_url(server.url) as r:
        try:
            rows: Any = r.xinfo_consumers(STREAM, "forwarders")
        except redis.ResponseError:  # no group yet
            return 0
        for row in rows:
            if row["name"] in (consumer, consumer.encode()):
                return int(row["pending"])
    return 0


def _holds_some(server: EmbeddedRedis, consumer: str) -> bool:
    return _held_by(server, consumer) > 0


def _metric(port: int, name: str) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
        text = r.read().decode()
    return sum(
        float(v) for v in re.findall(rf"^{re.escape(name)}(?:{{[^}}]*}})? (\S+)$", text, re.M)
    )


def test_analytics_down_then_back_everything_delivered_no_hot_loop(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim()
    sim.fault(mode="down")
    add_events(redis_server.url, 1_000)
    metrics_port = free_port()
    env = fwd_env(
        redis_server,
        sim,
        TRACKRELAY_BACKOFF_BASE="0.2",
        TRACKRELAY_BACKOFF_MAX="2",
        TRACKRELAY_METRICS_PORT=str(metrics_port),
    )
    proc = spawn_role(["forwarder"], env, tmp_path / "f.log")
    try:
        # counted from the first refusal: the process's start-up is no part of the window
        wait_for(lambda: sim.state()["requests"].get("503", 0) >= 1, 30, "a first push")
        first = sim.state()["requests"].get("503", 0)
        time.sleep(6)
        refused = sim.state()["requests"].get("503", 0) - first
        # Two lanes, each backing off from 0.2 s up to 2 s: a handful each, not hundreds.
        assert refused <= 30, f"{refused} pushes in 6 s against a down analytics"
        assert sim.state()["accepted"] == 0
        sim.fault(mode="healthy")
        wait_for(lambda: sim.state()["accepted"] == 1_000, 30, "delivery after recovery")
        # Now analytics refuses connections altogether (its process is gone).
        port = int(sim.url.rsplit(":", 1)[1])
        stop_all([sim.proc])
        before = _metric(metrics_port, "trackrelay_push_failures_total")
        add_events(redis_server.url, 500, prefix="late")
        metric = functools.partial(_metric, metrics_port, "trackrelay_push_failures_total")
        wait_for(lambda: metric() > before, 30, "a first failed push")
        first = metric()
        time.sleep(5)
        failures = metric() - first
        assert failures <= 30, f"{failures} failed pushes in 5 s: a hot loop"
        back = start_sim(port=port)
        wait_for(lambda: back.state()["accepted"] == 500, 30, "delivery after restart")
    finally:
        stop_all([proc])
    assert queue_empty(redis_server)


async def test_a_poison_event_goes_alone_to_the_dlq(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim]
) -> None:
    sim = start_sim()
    add_events(redis_server.url, 500, poison_at=250)
    settings = ForwarderSettings(batch_size=500, block_ms=100)
    r = AsyncRedis.from_url(redis_server.url)
    sink = HttpSink(sim.url, settings.push_timeout)
    fwd = Forwarder(r, sink, settings, consumer="solo")
    stop = asyncio.Event()
    task = asyncio.create_task(fwd.run(stop))
    try:
        for _ in range(100):
            if await r.xlen(DLQ_STREAM) == 1 and await r.xlen(STREAM) == 0:
                break
            await asyncio.sleep(0.1)
    finally:
        stop.set()
        await task
    state = await asyncio.to_thread(sim.state)
    assert state["accepted"] == 499
    dead: Any = await r.xrange(DLQ_STREAM)
    assert len(dead) == 1
    fields = dead[0][1]
    assert Event.from_json(fields[b"e"]).event_id == "o250:0"
    assert fields[b"reason"].startswith(b"rejected by analytics")
    # Splitting in halves: 1 + 2 * log2(500) requests at most, not 500.
    assert sum(state["requests"].values()) <= 1 + 2 * 9
    await sink.aclose()
    await r.aclose()


async def test_events_delivered_too_often_are_dead_lettered(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim]
) -> None:
    sim = start_sim()
    add_events(redis_server.url, 3)
    r = AsyncRedis.from_url(redis_server.url)
    await r.xgroup_create(STREAM, "forwarders", id="0", mkstream=True)
    # A consumer that keeps crashing on these entries: each read is a delivery.
    await r.xreadgroup("forwarders", "crashy", {STREAM: ">"}, count=3)
    for _ in range(3):
        await r.xreadgroup("forwarders", "crashy", {STREAM: "0"}, count=3)
    settings = ForwarderSettings(
        max_deliveries=3,
        push_timeout=0.1,
        claim_idle=0.3,
        redis_timeout=0.1,
        claim_interval=0.1,
        block_ms=50,
    )
    sink = HttpSink(sim.url, settings.push_timeout)
    stop = asyncio.Event()
    await asyncio.sleep(0.4)
    task = asyncio.create_task(Forwarder(r, sink, settings, consumer="rescuer").run(stop))
    for _ in range(50):
        if await r.xlen(DLQ_STREAM) == 3:
            break
        await asyncio.sleep(0.1)
    stop.set()
    await task
    dead: Any = await r.xrange(DLQ_STREAM)
    assert [f[b"reason"] for _, f in dead] == [b"delivered 5 times (max 3)"] * 3
    assert (await asyncio.to_thread(sim.state))["accepted"] == 0
    # The DLQ commands: list shows them, replay puts them back on the stream.
    env = {"TRACKRELAY_REDIS_URL": redis_server.url}
    listed = (await _dlq_cli(env, "list")).splitlines()
    assert len(listed) == 3
    assert json.loads(listed[0])["reason"].startswith("delivered 5 times")
    assert await _dlq_cli(env, "replay") == "replayed 3 events onto the stream"
    assert await r.xlen(DLQ_STREAM) == 0 and await r.xlen(STREAM) == 3
    assert await _dlq_cli(env, "purge") == "purged 0 events from the DLQ"
    await sink.aclose()
    await r.aclose()


async def _dlq_cli(env: dict[str, str], action: str) -> str:
    done = await asyncio.to_thread(run_cli, ["dlq", action], env)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_sigterm_during_a_hanging_push_exits_cleanly_and_acks_nothing(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim()
    sim.fault(mode="hang")
    add_events(redis_server.url, 50)
    env = fwd_env(
        redis_server,
        sim,
        TRACKRELAY_PUSH_TIMEOUT="30",
        TRACKRELAY_CLAIM_IDLE="60",
        TRACKRELAY_SHUTDOWN_GRACE="1",
    )
    proc = spawn_role(["forwarder"], env, tmp_path / "f.log")
    wait_for(
        lambda: sim.state()["requests"] == {} and _pending(redis_server) == 50,
        20,
        "a push in flight",
    )
    time.sleep(0.5)
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    # cut after its 1 s grace, not left to run out its 30 s push timeout
    assert time.monotonic() - started < 15
    assert _pending(redis_server) == 50  # nothing acked that analytics did not accept


def _pending(server: EmbeddedRedis) -> int:
    with redis.Redis.from_url(server.url) as r:
        try:
            return int(r.xpending(STREAM, "forwarders")["pending"])
        except redis.ResponseError:
            return 0


def test_a_forwarder_rides_out_a_redis_restart(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim()
    server = EmbeddedRedis(tmp_path / "redis").start()  # append-only file: survives a crash
    env = fwd_env(server, sim, TRACKRELAY_BACKOFF_BASE="0.1", TRACKRELAY_BACKOFF_MAX="1")
    proc = spawn_role(["forwarder"], env, tmp_path / "f.log")
    try:
        add_events(server.url, 200, prefix="before")
        wait_for(lambda: sim.state()["accepted"] == 200, 30, "delivery before the crash")
        server.kill()
        time.sleep(2)
        assert proc.poll() is None, "the forwarder died with Redis"
        server = EmbeddedRedis(server.data_dir, port=server.port).start()
        add_events(server.url, 200, prefix="after")
        wait_for(lambda: sim.state()["accepted"] == 400, 30, "delivery after the restart")
        assert proc.poll() is None
    finally:
        stop_all([proc])
        server.stop()
    assert "redis unavailable" in (tmp_path / "f.log").read_text()


async def test_a_deleted_stream_and_group_are_recreated(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim]
) -> None:
    sim = start_sim()
    settings = ForwarderSettings(block_ms=100, backoff_base=0.05, backoff_max=0.2)
    r = AsyncRedis.from_url(redis_server.url)
    sink = HttpSink(sim.url, settings.push_timeout)
    stop = asyncio.Event()
    task = asyncio.create_task(Forwarder(r, sink, settings, consumer="solo").run(stop))
    try:
        await asyncio.to_thread(add_events, redis_server.url, 10, None, "first")
        await _until(lambda: sim.state()["accepted"] == 10)
        await r.delete(STREAM)  # the group goes with the key
        await asyncio.sleep(0.3)
        await asyncio.to_thread(add_events, redis_server.url, 10, None, "second")
        await _until(lambda: sim.state()["accepted"] == 20)
    finally:
        stop.set()
        await task
        await sink.aclose()
        await r.aclose()


async def _until(cond: Callable[[], bool], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(cond):
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.1)


def test_forwarders_keep_draining_a_full_redis_and_say_so(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    """At maxmemory Redis refuses SET, XADD and XGROUP CREATE but still serves XREADGROUP,
    XACK and XDEL: the forwarders (one running, one started while Redis is full) drain it,
    under a shared budget, and their metrics and views say the queue's Redis is full."""
    sim = start_sim()
    sim.fault(mode="down")
    admin = redis.Redis.from_url(redis_server.url)
    admin.set(BUDGET_KEY, "5000")  # every push reserves through the budget's script
    add_events(redis_server.url, 3_000)
    ports = [free_port(), free_port()]
    env = fwd_env(redis_server, sim, TRACKRELAY_BACKOFF_BASE="0.1", TRACKRELAY_BACKOFF_MAX="1")
    first = spawn_role(
        ["forwarder", "--consumer-name", "a", "--metrics-port", str(ports[0])],
        env,
        tmp_path / "a.log",
    )
    procs = [first]
    try:
        wait_for(lambda: sim.state()["requests"].get("503", 0) >= 1, 30, "a first push")
        admin.config_set("maxmemory", "1")
        time.sleep(2)
        assert first.poll() is None, "the forwarder exited when Redis filled up"
        procs.append(
            spawn_role(
                ["forwarder", "--consumer-name", "b", "--metrics-port", str(ports[1])],
                env,
                tmp_path / "b.log",
            )
        )
        sim.fault(mode="healthy")
        wait_for(
            lambda: sim.state()["accepted"] == 3_000,
            60,
            "every event delivered from the full Redis",
            lambda: str(sim.state()["accepted"]),
        )
        assert [p.poll() for p in procs] == [None, None]
        for port, proc in zip(ports, procs, strict=True):
            # the second may deliver nothing before the first has it all: its endpoint
            # may still be starting, which is no answer yet
            wait_http(f"http://127.0.0.1:{port}/healthz", 30, proc)
            wait_for(functools.partial(_full_is, port, 1), 10, "trackrelay_queue_redis_full 1")
        wait_for(lambda: _view(admin, "a").get("redis_full") is True, 10, "a view saying full")
        assert admin.xlen(STREAM) == 0
        admin.config_set("maxmemory", "0")
        for port in ports:
            wait_for(functools.partial(_full_is, port, 0), 10, "trackrelay_queue_redis_full 0")
    finally:
        admin.config_set("maxmemory", "0")
        stop_all(procs)
        admin.close()
    state = sim.state()
    assert state["duplicates"] == 0 and state["overlaps"] == 0
    assert "redis full" in (tmp_path / "a.log").read_text()


def _view(admin: redis.Redis, consumer: str) -> dict[str, Any]:
    return dict(json.loads(admin.get(FORWARDER_STATS_PREFIX + consumer) or "{}"))


def _full_is(port: int, value: float) -> bool:
    return _metric(port, "trackrelay_queue_redis_full") == value
