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
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all
from trackrelay.queue.keys import FORWARDER_STATS_PREFIX


def timeline(sim: Sim, since: float) -> list[dict[str, Any]]:
    seconds: list[dict[str, Any]] = sim.call(f"/admin/timeline?since={since}")["seconds"]
    return seconds


def budget_cli(server: EmbeddedRedis, *args: str) -> subprocess.CompletedProcess[str]:
    return run_cli(["budget", *args, "--redis-url", server.url], {})


def whole_seconds(sim: Sim, start: float, end: float) -> list[int]:
    """Events received in each whole second strictly between ``start`` and ``end``
    (0 for a second with no request: the timeline lists only busy ones)."""
    seen = {s["t"]: s["received"] for s in timeline(sim, start)}
    return [seen.get(t, 0) for t in range(int(start) + 1, int(end))]


def published_budgets(server: EmbeddedRedis) -> list[float | None]:
    """The budget each forwarder's published view says it runs under."""
    with redis.Redis.from_url(server.url) as r:
        keys: Any = r.keys(FORWARDER_STATS_PREFIX + "*")
        return [json.loads(r.get(k) or "{}").get("budget") for k in keys]


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
        try:
            wait_for(functools.partial(delivered, sim, events), 60, f"{name}: all delivered")
        finally:
            stop_all([proc])
        # the drain as analytics saw it, from its first busy second to its last: the
        # forwarder's start-up (seconds on a loaded machine) is no part of it
        busy = [s["t"] for s in timeline(sim, 0) if s["received"]]
        took = max(busy) - min(busy) + 1
        state = sim.state()
        total = sum(state["requests"].values())
        results[name] = (overloaded(sim) / total, took)
        assert state["duplicates"] == 0
        assert queue_empty(redis_server)
    fixed_share, _ = results["fixed"]
    adaptive_share, took = results["adaptive"]
    assert fixed_share > 0.2, f"the fixed baseline should overload analytics: {results}"
    assert adaptive_share < 0.05, f"adaptive delivery overloaded analytics: {results}"
    assert took <= 3000 / 400 * 2, f"adaptive delivery drained too slowly: {results}"


def test_the_shared_budget_holds_across_replicas_and_changes_live(
    redis_server: EmbeddedRedis, start_sim: Callable[..., Sim], tmp_path: Path
) -> None:
    sim = start_sim()  # unlimited capacity: only the budget limits
    add_events(redis_server.url, 20_000)
    assert budget_cli(redis_server, "set", "300").returncode == 0
    tolerance = 0.1  # a push carries at most 30 events at 300/s: few pushes a second
    env = fwd_env(
        redis_server, sim, TRACKRELAY_BATCH_SIZE="100", TRACKRELAY_BUDGET_TOLERANCE=str(tolerance)
    )
    procs = [
        spawn_role(["forwarder", "--consumer-name", f"r{n}"], env, tmp_path / "f.log")
        for n in range(3)
    ]
    try:
        # measured only once every replica runs under the budget and pushes
        wait_for(lambda: published_budgets(redis_server) == [300] * 3, 30, "three replicas")
        wait_for(lambda: sim.state()["accepted"] > 0, 30, "deliveries")
        start = time.time()
        time.sleep(6)
        steady = whole_seconds(sim, start, time.time())
        assert budget_cli(redis_server, "set", "900").returncode == 0
        wait_for(lambda: published_budgets(redis_server) == [900] * 3, 10, "the new budget")
        start = time.time()
        time.sleep(5)
        faster = whole_seconds(sim, start, time.time())
        shown = budget_cli(redis_server, "show").stdout
    finally:
        stop_all(procs)

    # Sums over whole windows, not single seconds: a push the scheduler delays lands in
    # the next second at analytics, so a window may see one second's worth of slack.
    def most(budget: float, seconds: int) -> float:
        return budget * (seconds + 1) * (1 + tolerance)

    assert len(steady) >= 4 and len(faster) >= 3, (steady, faster)
    assert sum(steady) <= most(300, len(steady)), f"three replicas exceeded 300/s: {steady}"
    assert sum(steady) >= 300 * 0.8 * len(steady), f"the budget went unused: {steady}"
    assert sum(faster) >= 600 * len(faster), f"a raised budget went unused: {faster}"
    assert sum(faster) <= most(900, len(faster)), faster
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
        (("set", "-5"), ">= 1"),
        (("set", "0.001"), "one event per controller tick"),
        (("clear", "5"), "takes no value"),
    ):
        done = budget_cli(redis_server, *args)
        assert done.returncode == 2, (args, done.stderr)
        assert message in done.stderr and "Traceback" not in done.stderr
    assert budget_cli(redis_server, "set", "250").returncode == 0
    assert "250 events/s" in budget_cli(redis_server, "show").stdout
    assert budget_cli(redis_server, "clear").returncode == 0
    assert "budget: none" in budget_cli(redis_server, "show").stdout
