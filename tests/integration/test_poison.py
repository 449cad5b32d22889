"""Poison events leave the lane; an outage dead-letters nothing; a lane that crashes is loud.

Real Redis, the real simulator (its poison-SKU, body-limit and trickle faults),
the real forwarder code; processes where the exit code or a signal matters.
"""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from redis.asyncio import Redis as AsyncRedis

from tests.integration.conftest import (
    Sim,
    add_events,
    fwd_env,
    queue_empty,
    run_forwarder,
    wait_for,
)
from trackrelay.control.push_outcome import Outcome
from trackrelay.events import Event
from trackrelay.forwarder.sink import HttpSink
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.queue.keys import DLQ_STREAM, EVENT_FIELD, STREAM
from trackrelay.runtime.ports import free_port


def add_one(url: str, event_id: str, sku: str = "poison", order_id: str | None = None) -> None:
    ev = Event(event_id, order_id or event_id.split(":")[0], sku, 1, 1.0, "2026-01-01T00:00:00Z")
    with redis.Redis.from_url(url) as r:
        r.xadd(STREAM, {EVENT_FIELD: ev.to_json()})


def after(seconds: float) -> Callable[[AsyncRedis], Awaitable[bool]]:
    """A ``run_forwarder`` condition: ``seconds`` have passed since this call."""
    started = time.monotonic()

    async def passed(_: AsyncRedis) -> bool:
        return time.monotonic() - started > seconds

    return passed


async def test_an_event_that_fails_with_500_alone_goes_to_the_dlq(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim]
) -> None:
    sim = start_sim()
    sim.fault(mode="healthy", poison_sku="poison", poison_status=500)
    events = add_events(redis_server.url, 120)
    add_one(redis_server.url, "bad:0")
    events |= add_events(redis_server.url, 120, prefix="p")
    sink = HttpSink(sim.url, 2.0)

    async def done(r: AsyncRedis) -> bool:
        return bool(await r.xlen(DLQ_STREAM) == 1 and await r.xlen(STREAM) == 0)

    _, r = await run_forwarder(redis_server, sink, done, batch_size=50)
    dead: Any = await r.xrange(DLQ_STREAM)
    assert Event.from_json(dead[0][1][b"e"]).event_id == "bad:0"
    assert b"HTTP 500" in dead[0][1][b"reason"]
    assert b"accepted other events" in dead[0][1][b"reason"]
    assert (await asyncio.to_thread(sim.state))["accepted"] == len(events)
    await sink.aclose()
    await r.aclose()


async def test_during_an_outage_nothing_is_dead_lettered(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim]
) -> None:
    sim = start_sim()
    sim.fault(mode="flaky", error_rate=1.0)  # every push: 500
    events = add_events(redis_server.url, 200)
    sink = HttpSink(sim.url, 2.0)
    _, r = await run_forwarder(redis_server, sink, after(3), batch_size=50)
    assert await r.xlen(DLQ_STREAM) == 0
    # Enough failures to split (split_after 3) and open the breaker (5), which then
    # holds the pushes to a probe at a time.
    assert 5 <= (await asyncio.to_thread(sim.state))["requests"].get("500", 0) <= 15
    await asyncio.to_thread(sim.fault, mode="healthy")

    async def drained(r: AsyncRedis) -> bool:
        return bool(await r.xlen(STREAM) == 0)

    await run_forwarder(redis_server, sink, drained, batch_size=50)
    assert (await asyncio.to_thread(sim.state))["accepted"] == len(events)
    assert await r.xlen(DLQ_STREAM) == 0
    await sink.aclose()
    await r.aclose()


async def test_a_wrong_analytics_path_dead_letters_nothing(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim]
) -> None:
    sim = start_sim()
    add_events(redis_server.url, 20)
    sink = HttpSink(sim.url + "/wrong", 2.0)  # 404 for every push
    _, r = await run_forwarder(redis_server, sink, after(2), batch_size=20)
    assert await r.xlen(DLQ_STREAM) == 0
    assert await r.xlen(STREAM) == 20
    await sink.aclose()
    await r.aclose()


async def test_413_lowers_the_push_byte_cap_and_dead_letters_an_event_too_big_alone(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim]
) -> None:
    sim = start_sim("--max-body-bytes", "4000")
    events = add_events(redis_server.url, 300)
    add_one(redis_server.url, "huge:0", order_id="x" * 5000)
    sink = HttpSink(sim.url, 2.0)

    async def done(r: AsyncRedis) -> bool:
        return bool(await r.xlen(DLQ_STREAM) == 1 and await r.xlen(STREAM) == 0)

    fwd, r = await run_forwarder(redis_server, sink, done, batch_size=300)
    assert fwd.push_byte_cap is not None and fwd.push_byte_cap <= 4000
    dead: Any = await r.xrange(DLQ_STREAM)
    assert Event.from_json(dead[0][1][b"e"]).event_id == "huge:0"
    assert b"HTTP 413" in dead[0][1][b"reason"]
    state = await asyncio.to_thread(sim.state)
    assert state["accepted"] == len(events)
    # After the first refusals, batches fit: far fewer 413s than batches sent.
    assert state["requests"]["413"] < 20
    await sink.aclose()
    await r.aclose()


async def test_a_trickling_answer_is_cut_at_the_push_deadline(
    start_sim: Callable[..., Sim],
) -> None:
    sim = start_sim()
    sim.fault(mode="trickle", hang=30)  # headers at once, then a byte every 0.1 s
    sink = HttpSink(sim.url, 1.0)
    ev = Event("t:0", "t", "sku", 1, 1.0, "2026-01-01T00:00:00Z").to_json().encode()
    started = time.monotonic()
    result = await sink.push([ev], deadline=started + 1.0)
    elapsed = time.monotonic() - started
    assert result.outcome is Outcome.FAILED, result
    # the trickle lasts 30 s: a push cut anywhere near its 1 s deadline is far under 10
    assert elapsed < 10, f"the push outlived its deadline: {elapsed:.2f}s"
    # A deadline already past sends nothing at all.
    before = (await asyncio.to_thread(sim.state))["requests"]
    expired = await sink.push([ev], deadline=time.monotonic() - 0.01)
    assert expired.outcome is Outcome.EXPIRED
    assert (await asyncio.to_thread(sim.state))["requests"] == before
    await sink.aclose()


def delivering_forwarder(
    redis_server: EmbeddedRedis, sim: Sim, log: Path
) -> subprocess.Popen[bytes]:
    """A forwarder that has delivered 5 events: past its start, its lanes reading."""
    proc = spawn_role(["forwarder"], fwd_env(redis_server, sim), log)
    try:
        add_events(redis_server.url, 5)
        wait_for(lambda: sim.state()["accepted"] == 5, 20, "delivery")
    except BaseException:
        stop_all([proc])
        raise
    return proc


def test_a_crashing_lane_stops_the_forwarder_with_one_clear_line(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim()
    log = tmp_path / "f.log"
    proc = delivering_forwarder(redis_server, sim, log)
    try:
        # one step: no lane sees the stream missing first
        with redis.Redis.from_url(redis_server.url) as r, r.pipeline() as pipe:
            pipe.delete(STREAM)
            pipe.set(STREAM, "not a stream")  # someone overwrote our key: WRONGTYPE
            pipe.execute()
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGUSR1)  # the forwarder logs where each task waits
            time.sleep(2)
            raise AssertionError(f"the forwarder did not stop:\n{log.read_text()}") from None
        assert code == 1, log.read_text()
    finally:
        stop_all([proc])
    text = log.read_text()
    assert "CRITICAL" in text and "a task crashed" in text and "WRONGTYPE" in text
    assert "Traceback" not in text


def test_a_stalled_redis_is_ridden_out_and_reported_by_readyz(
    start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim()
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False).start()
    port = free_port()
    env = fwd_env(
        server,
        sim,
        TRACKRELAY_REDIS_TIMEOUT="1",
        TRACKRELAY_BLOCK_MS="200",
        TRACKRELAY_BACKOFF_MAX="0.5",
        TRACKRELAY_METRICS_PORT=str(port),
        TRACKRELAY_CONCURRENCY="2",
    )
    proc = spawn_role(["forwarder"], env, tmp_path / "f.log")
    assert server.process is not None
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 20, proc)
        health = _get_json(f"http://127.0.0.1:{port}/healthz")
        assert health["tasks"] == health["expected"] == 4  # 2 lanes, housekeeping, stats
        server.process.send_signal(signal.SIGSTOP)  # a peer that answers nothing, no FIN
        wait_for(lambda: _status(f"http://127.0.0.1:{port}/readyz") == 503, 10, "unready")
        assert proc.poll() is None
        server.process.send_signal(signal.SIGCONT)
        add_events(server.url, 50)
        wait_for(lambda: sim.state()["accepted"] == 50, 20, "delivery after the stall")
        assert _status(f"http://127.0.0.1:{port}/readyz") == 200
        assert queue_empty(server)
    finally:
        if server.process.poll() is None:
            server.process.send_signal(signal.SIGCONT)
        stop_all([proc])
        server.stop()
    assert "redis unavailable" in (tmp_path / "f.log").read_text()


def _status(url: str) -> int:
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def _get_json(url: str) -> Any:
    import json
    import urllib.request

    with urllib.request.urlopen(url, timeout=2) as r:
        return json.loads(r.read())


def test_sigusr1_logs_where_each_task_waits_and_the_forwarder_goes_on(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim()
    log = tmp_path / "f.log"
    proc = delivering_forwarder(redis_server, sim, log)
    try:
        proc.send_signal(signal.SIGUSR1)
        wait_for(
            lambda: "_lane_step" in log.read_text(), 10, "the stacks in the log", log.read_text
        )
        add_events(redis_server.url, 5, prefix="after")
        wait_for(lambda: sim.state()["accepted"] == 10, 20, "delivery after the dump")
        assert proc.poll() is None, log.read_text()
    finally:
        stop_all([proc])


pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
