"""Adaptive delivery against the simulator's capacity model, and the shared budget (real Redis)."""

from __future__ import annotations

import functools
import json
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from tests.integration.conftest import (
    Sim,
    add_events,
    fwd_env,
    queue_empty,
    run_cli,
    wait_for,
)
from trackrelay.constants import FORWARDER_STATS_PREFIX
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all


def timeline(sim: Sim, since: float) -> list[dict[str, Any]]:
    seconds: list[dict[str, Any]] = sim.call(f"/admin/timeline?since={since}")["seconds"]
    return seconds


def budget_cli(server: EmbeddedRedis, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["budget", *args, "--redis-url", server.url], {})


def delivered(sim: Sim, events: int) -> bool:
    return bool(sim.state()["accepted"] == events)


def overloaded(sim: Sim) -> int:
    requests = sim.state()["requests"]
    return int(requests.get("429", 0)) + int(requests.get("503", 0))


def test_adaptive_window_drains_near_capacity_where_fixed_lanes_overload(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    """Capacity 400 events/s, 429 past 200 events of queued work: eight fixed lanes of
    100-event batches keep analytics overloaded; the adaptive window finds its pace."""
    args = ("--rate", "400", "--queue-limit", "200", "--overhead", "0.001")
    results = {}
    events = 3000
    for name, flags in (("fixed", ["--fixed", "--concurrency", "8"]), ("adaptive", [])):
        sim = start_sim(*args)
        with redis.Redis.from_url(redis_server.url) as r:
            r.flushall()
        add_events(redis_server.url, events, prefix=name)
        env = fwd_env(redis_server, sim, TRACKRELAY_BATCH_SIZE="100")
        proc = spawn_role(["forwarder", *flags], env, tmp_path / f"{name}.log")
        started = time.monotonic()
        try:
            wait_for(functools.partial(delivered, sim, events), 60, f"{name}: all delivered")
            took = time.monotonic() - started
        finally:
            stop_all([proc])
        state = sim.state()
        total = sum(state["requests"].values())
        results[name] = (overloaded(sim) / total, took)
        assert state["duplicates"] == 0
        assert queue_empty(redis_server)
    fixed_share, _ = results["fixed"]
    adaptive_share, took = results["adaptive"]
    assert fixed_share > 0.2, f"the fixed baseline should overload analytics: {results}"
    assert adaptive_share < 0.05, f"adaptive delivery overloaded analytics: {results}"
    assert took < 3000 / 400 * 1.6, f"adaptive delivery drained too slowly: {results}"


def test_the_shared_budget_holds_across_replicas_and_changes_live(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim()  # unlimited capacity: only the budget limits
    add_events(redis_server.url, 20_000)
    assert budget_cli(redis_server, "set", "300").returncode == 0
    env = fwd_env(redis_server, sim, TRACKRELAY_BATCH_SIZE="100")
    procs = [
        spawn_role(["forwarder", "--consumer-name", f"r{n}"], env, tmp_path / "f.log")
        for n in range(3)
    ]
    try:
        since = time.time()
        time.sleep(6)
        steady = timeline(sim, since)[1:-1]
        assert budget_cli(redis_server, "set", "900").returncode == 0
        changed = time.time()
        time.sleep(5)
        after = [s for s in timeline(sim, changed + 2) if s["t"] >= changed + 2][:-1]
        shown = budget_cli(redis_server, "show").stdout
    finally:
        stop_all(procs)
    sent = [s["received"] for s in steady]
    assert max(sent) <= 300 * 1.05, f"three replicas exceeded a 300/s budget: {sent}"
    assert sum(sent) / len(sent) >= 300 * 0.8, f"the budget went unused: {sent}"
    faster = [s["received"] for s in after]
    assert min(faster) >= 600, f"a raised budget took effect too slowly: {faster}"
    assert max(faster) <= 900 * 1.05, faster
    assert "budget: 900 events/s" in shown
    assert shown.count("forwarder r") == 3  # each replica publishes its view


def test_an_open_breaker_probes_with_single_events_and_views_are_published(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim()
    sim.fault(mode="down")
    add_events(redis_server.url, 2000)
    env = fwd_env(
        redis_server,
        sim,
        TRACKRELAY_BATCH_SIZE="200",
        TRACKRELAY_BREAKER_OPEN_MAX="1",
        TRACKRELAY_STATS_INTERVAL="0.5",
    )
    proc = spawn_role(["forwarder", "--consumer-name", "lone"], env, tmp_path / "f.log")
    key = FORWARDER_STATS_PREFIX + "lone"
    try:
        wait_for(lambda: sim.state()["requests"].get("503", 0) >= 5, 20, "the breaker to open")
        with redis.Redis.from_url(redis_server.url) as r:
            wait_for(lambda: json.loads(r.get(key) or "{}").get("breaker") == "open", 10, "open")
            view = json.loads(r.get(key) or "{}")
            since = time.time() + 1
            time.sleep(6)
            seconds = timeline(sim, since)[:-1]
            probes = sum(s["statuses"].get("503", 0) for s in seconds)
            received = sum(s["received"] for s in seconds)
            # About one probe per breaker_open_max (1 s), each of one event.
            assert 2 <= probes <= len(seconds) + 1, seconds
            assert received == probes
            sim.fault(mode="healthy")
            wait_for(lambda: sim.state()["accepted"] == 2000, 30, "delivery after recovery")
            wait_for(lambda: json.loads(r.get(key) or "{}").get("breaker") == "closed", 5, "")
    finally:
        stop_all([proc])
    assert view["outcomes"].get("overloaded", 0) >= 5
    assert view["latency_p99"] is not None and view["limit_events"] >= 1
    with redis.Redis.from_url(redis_server.url) as r:
        wait_for(lambda: r.get(key) is None, 5, "the view to expire after the process stopped")
    assert queue_empty(redis_server)


def test_budget_command_refuses_bad_values(redis_server: EmbeddedRedis) -> None:
    for args, message in (
        (("set",), "needs a value"),
        (("set", "fast"), "must be a number"),
        (("set", "-5"), "> 0"),
        (("clear", "5"), "takes no value"),
    ):
        done = budget_cli(redis_server, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
    assert budget_cli(redis_server, "set", "250").returncode == 0
    assert "250 events/s" in budget_cli(redis_server, "show").stdout
    assert budget_cli(redis_server, "clear").returncode == 0
    assert "budget: none" in budget_cli(redis_server, "show").stdout
