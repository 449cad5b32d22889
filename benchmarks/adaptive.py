"""Adaptive delivery against an analytics of capacity C, next to the fixed strategies.

Every run has its own Redis, its own analytics simulator (FIFO server of C
events/s, latency rising with load, 429 with Retry-After past half a second of
queued work) and its own forwarders, started on a backlog. The strategies of
one scenario run side by side (the hot-looping baseline at the lowest CPU
priority); the scenarios run one after the other.

    .venv/bin/python benchmarks/adaptive.py [--capacity 500] [--quick]

Prints one table per scenario and the targets for trackrelay adaptive; writes
benchmarks/results/adaptive.json and a PNG per scenario (rate, window, latency
over time) to benchmarks/plots/.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import (
    PLOTS,
    RESULTS,
    add_events,
    http,
    pyplot,
    save_plot,
    table,
    write_json,
)
from trackrelay.control.percentile import percentile
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.queue.keys import BUDGET_KEY, CONSUMER_GROUP, FORWARDER_STATS_PREFIX, STREAM
from trackrelay.runtime.ports import free_port

BATCH = 100
OVERHEAD = 0.001
"""Seconds of fixed work per request at analytics."""


@dataclass(frozen=True)
class Strategy:
    name: str
    flags: tuple[str, ...] = ()
    budget: float | None = None
    """Events/s, as a multiple of C."""
    low_priority: bool = False


def strategies() -> list[Strategy]:
    fixed = ("--fixed", "--concurrency")
    out = [Strategy("trackrelay adaptive")]
    out += [Strategy(f"fixed concurrency {n}", (*fixed, str(n))) for n in (1, 2, 8)]
    for share in (0.5, 1.0, 2.0):
        # A fixed rate in a config: full batches, paced by the shared budget.
        out.append(Strategy(f"fixed rate {share:g}C", (*fixed, "8"), budget=share))
    out.append(
        Strategy(
            "no limit, immediate retries",
            (
                *fixed,
                "8",
                "--ignore-retry-after",
                "--backoff-base",
                "0.001",
                "--backoff-max",
                "0.001",
            ),
            low_priority=True,
        )
    )
    return out


@dataclass(frozen=True)
class Action:
    at: float
    path: str
    body: dict[str, Any]


@dataclass(frozen=True)
class Scenario:
    name: str
    backlog: float
    """Events to drain, in seconds of capacity."""
    cap: float
    """Longest run, seconds."""
    actions: tuple[Action, ...] = ()
    replicas: int = 1
    collapse: bool = False
    budget: float | None = None
    """A shared budget for the adaptive runs, as a multiple of C."""
    only_adaptive: bool = False
    stop_when_drained: bool = True


def scenarios(quick: bool) -> list[Scenario]:
    scale = 0.25 if quick else 1.0
    return [
        Scenario("drain", 60 * scale, 150 * scale + 20),
        Scenario("drain, collapse", 30 * scale, 90 * scale + 20, collapse=True),
        Scenario(
            "capacity halves",
            40,
            40 * scale + 5,
            actions=(Action(20 * scale, "/admin/capacity", {"rate": 0.5}),),
            stop_when_drained=False,
        ),
        Scenario(
            "outage 30 s",
            20,
            (5 + 30 + 40) * scale + 10,
            actions=(
                Action(5 * scale, "/admin/fault", {"mode": "down"}),
                Action((5 + 30) * scale, "/admin/fault", {"mode": "healthy"}),
            ),
        ),
        Scenario(
            "2 replicas, budget 0.8C", 24 * scale, 60, replicas=2, budget=0.8, only_adaptive=True
        ),
        Scenario(
            "4 replicas, budget 0.8C", 24 * scale, 60, replicas=4, budget=0.8, only_adaptive=True
        ),
    ]


@dataclass
class Run:
    scenario: Scenario
    strategy: Strategy
    capacity: float
    workdir: Path
    server: EmbeddedRedis | None = None
    sim_url: str = ""
    procs: list[Any] = field(default_factory=list)
    client: redis.Redis | None = None
    backlog: int = 0
    started: float = 0.0
    started_wall: float = 0.0
    drained_at: float | None = None
    first_at: float | None = None
    """When analytics had accepted its first events (the forwarders were up)."""
    first_accepted: int = 0
    offset: float = 0.0
    """The scenario's start on this run's clock."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    result: dict[str, Any] = field(default_factory=dict)
    """What the simulator saw, fetched at the end: per-second timeline and final state."""
    budget: float | None = None
    flags: list[str] = field(default_factory=list)
    sim: Any = None

    @property
    def label(self) -> str:
        return self.strategy.name

    def start(self) -> None:
        s, c = self.scenario, self.capacity
        self.server = EmbeddedRedis(self.workdir / "redis", appendonly=False).start()
        self.client = redis.Redis.from_url(self.server.url)
        port = free_port()
        sim_args = [
            "analytics-sim",
            "--port",
            str(port),
            "--rate",
            str(c),
            "--overhead",
            str(OVERHEAD),
            "--queue-limit",
            str(0.5 * c),
        ]
        if s.collapse:
            sim_args.append("--collapse")
        sim = spawn_role(sim_args, {}, self.workdir / "sim.log")
        self.procs.append(sim)
        self.sim_url = f"http://127.0.0.1:{port}"
        wait_http(self.sim_url + "/healthz", 30, sim)
        for _ in range(3):  # the first requests of a fresh process are slow: not analytics'
            http(self.sim_url + "/v1/track", {"events": []})
        http(self.sim_url + "/admin/reset", {})
        self.backlog = int(s.backlog * c)
        self.client.xgroup_create(STREAM, CONSUMER_GROUP, id="0", mkstream=True)
        share = self.strategy.budget if self.strategy.budget is not None else s.budget
        flags = list(self.strategy.flags)
        if share is not None:
            self.budget = share * c
            self.client.set(BUDGET_KEY, f"{self.budget:g}")
            if self.strategy.budget is not None:  # a config's fixed rate: full batches
                flags += ["--budget-tolerance", f"{min(1.0, BATCH / self.budget):.4f}"]
        self.flags = flags
        self.sim = sim

    def launch(self) -> None:
        """Start the forwarders: every run of a scenario starts at the same moment."""
        assert self.server is not None
        env = {
            "TRACKRELAY_REDIS_URL": self.server.url,
            "TRACKRELAY_ANALYTICS_URL": self.sim_url,
            "TRACKRELAY_BATCH_SIZE": str(BATCH),
        }
        flags, sim = self.flags, self.sim
        for n in range(self.scenario.replicas):
            proc = spawn_role(
                ["forwarder", "--consumer-name", f"f{n}", *flags],
                env,
                self.workdir / "forwarder.log",
            )
            if self.strategy.low_priority:
                os.setpriority(os.PRIO_PROCESS, proc.pid, 19)
                os.setpriority(os.PRIO_PROCESS, sim.pid, 19)
            self.procs.append(proc)

    def ready(self) -> bool:
        """Every forwarder runs (it has published its first view)."""
        assert self.client is not None
        views = list(self.client.scan_iter(match=FORWARDER_STATS_PREFIX + "*"))
        return len(views) >= self.scenario.replicas

    def fill(self) -> None:
        """Put the backlog on the stream; the run's clock starts now."""
        assert self.client is not None
        self.started = time.monotonic()
        self.started_wall = time.time()
        add_events(self.client, self.backlog, "b", skus=50)

    def sample(self, scenario_t: float) -> None:
        assert self.client is not None
        state = http(self.sim_url + "/admin/state")
        views = []
        for key in self.client.scan_iter(match=FORWARDER_STATS_PREFIX + "*"):
            raw = self.client.get(key)
            if raw:
                views.append(json.loads(raw))
        self.samples.append(
            {
                "t": scenario_t,
                "accepted": state["accepted"],
                "limit": sum(v["limit_events"] for v in views) if views else None,
                "breaker": [v["breaker"] for v in views],
            }
        )
        now = time.monotonic() - self.started
        if self.first_at is None and state["accepted"] > 0:
            self.first_at, self.first_accepted = now, state["accepted"]
        if self.drained_at is None and state["accepted"] >= self.backlog:
            self.drained_at = now

    def stop(self) -> dict[str, Any]:
        timeline = http(f"{self.sim_url}/admin/timeline?since={self.started_wall - 1}&raw=true")
        state = http(self.sim_url + "/admin/state")
        stop_all(self.procs)
        if self.client is not None:
            self.client.close()
        if self.server is not None:
            self.server.stop()
        return {"timeline": timeline["seconds"], "state": state}


def capacity_at(s: Scenario, c: float, t: float) -> float:
    rate = c
    for a in s.actions:
        if a.path == "/admin/capacity" and t >= a.at:
            rate = c * a.body["rate"]
    return rate


def down_between(s: Scenario) -> tuple[float, float] | None:
    downs = [a.at for a in s.actions if a.body.get("mode") == "down"]
    ups = [a.at for a in s.actions if a.body.get("mode") == "healthy"]
    return (downs[0], ups[0]) if downs and ups else None


def figures(run: Run, c: float) -> dict[str, Any]:
    # Actions are timed from the scenario's start; this run's clock began a little
    # earlier (backlogs are written one run after the other).
    s = replace(
        run.scenario,
        actions=tuple(Action(a.at + run.offset, a.path, a.body) for a in run.scenario.actions),
    )
    result = run.result
    seconds = [x for x in result["timeline"] if x["t"] >= int(run.started_wall)]
    t0 = run.started_wall
    outage = down_between(s)
    latencies: list[float] = []
    later: list[float] = []
    worst: list[tuple[float, float]] = []
    requests = overload = outage_requests = 0
    received = 0
    for x in seconds:
        rel = x["t"] - t0
        idle = OVERHEAD + BATCH / capacity_at(s, c, rel)
        in_outage = outage is not None and outage[0] - 1 <= rel <= outage[1] + 1
        changing = any(
            a.path == "/admin/capacity" and a.at - 1 <= rel <= a.at + 2 for a in s.actions
        )
        n = sum(x["statuses"].values())
        received += x["received"]
        if in_outage:
            outage_requests += n
            continue
        requests += n
        overload += x["statuses"].get("429", 0) + x["statuses"].get("503", 0)
        if not changing:  # a request across the change is neither old nor new capacity
            latencies += [lat / idle for lat in x.get("latencies", [])]
            if rel >= 5:
                later += [lat / idle for lat in x.get("latencies", [])]
            if x["max"] is not None:
                worst.append((round(x["max"] / idle, 2), round(rel, 1)))
    accepted = max((smp["accepted"] for smp in run.samples), default=0)
    last = max((smp["t"] for smp in run.samples), default=s.cap)
    elapsed = run.drained_at if run.drained_at is not None else last
    began = run.first_at or 0.0
    counted = accepted - run.first_accepted
    # Work analytics could have done from the first accepted push to the end.
    span = elapsed - began
    if outage is not None:
        work = c * (span - (outage[1] - outage[0]))
    elif s.actions:
        step = 0.1
        work = sum(capacity_at(s, c, began + i * step) * step for i in range(int(span / step)))
    else:
        work = c * span
    if run.budget is not None:
        work = min(work, run.budget * span)
    out: dict[str, Any] = {
        "strategy": run.label,
        "goodput_over_capacity": counted / work if work else None,
        "p99_over_idle": percentile(latencies, 0.99),
        "p99_over_idle_after_5s": percentile(later, 0.99),
        "overload_share": overload / requests if requests else 0.0,
        "attempts_per_event": received / accepted if accepted else None,
        "drain_seconds": run.drained_at,
        "accepted": accepted,
        "backlog": run.backlog,
        "requests": requests,
        "duplicates": result["state"]["duplicates"],
        # The five worst seconds: (slowest response / idle batch, seconds since start).
        "slowest_seconds": sorted(worst, reverse=True)[:5],
    }
    if outage is not None:
        out["requests_during_outage"] = outage_requests
        if run.drained_at is not None:
            out["drain_after_recovery_seconds"] = run.drained_at - outage[1]
    changes = [a.at for a in s.actions if a.path == "/admin/capacity"]
    if changes:
        out["settle_seconds"] = settle_time(seconds, t0, changes[0], s, c)
    if run.budget is not None:
        full = [x["received"] for x in seconds[1:-1]]
        out["budget"] = run.budget
        out["max_second_over_budget"] = round(max(full) / run.budget, 4) if full else None
    return out


def settle_time(
    seconds: list[dict[str, Any]], t0: float, change: float, s: Scenario, c: float
) -> float | None:
    """Seconds after the change until every later second has no overload answer and
    p99 within 1.5x the new idle response time (None: never settled)."""
    after = [x for x in seconds if x["t"] - t0 >= change]
    after = after[:-1]  # the run's last second is cut short
    idle = OVERHEAD + BATCH / capacity_at(s, c, change + 1)
    last_bad: float | None = None
    for x in after:
        overload = x["statuses"].get("429", 0) + x["statuses"].get("503", 0)
        p99 = x["p99"]
        if overload or (p99 is not None and p99 > 1.5 * idle):
            last_bad = float(x["t"] - t0)
    if last_bad is None:
        return 0.0
    if after and last_bad >= after[-1]["t"] - t0:
        return None
    return last_bad + 1 - change


def run_scenario(s: Scenario, all_strategies: list[Strategy], c: float, base: Path) -> list[Run]:
    chosen = all_strategies[:1] if s.only_adaptive else all_strategies
    runs = [Run(s, st, c, Path(tempfile.mkdtemp(dir=base))) for st in chosen]
    for run in runs:
        run.start()
    for run in runs:
        run.launch()
    # The forwarders start on an empty stream: 8 interpreters starting at once would
    # starve the simulators of CPU and show up as analytics latency.
    deadline = time.monotonic() + 30
    while not all(run.ready() for run in runs) and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)
    for run in runs:
        run.fill()
    start = time.monotonic()
    for run in runs:
        run.offset = start - run.started
    done_actions: set[int] = set()
    try:
        while True:
            t = time.monotonic() - start
            for i, a in enumerate(s.actions):
                if i not in done_actions and t >= a.at:
                    body = dict(a.body)
                    if "rate" in body:
                        body["rate"] = body["rate"] * c
                    for run in runs:
                        http(run.sim_url + a.path, body)
                    done_actions.add(i)
            for run in runs:
                run.sample(t)
            finished = s.stop_when_drained and all(r.drained_at is not None for r in runs)
            if finished or t >= s.cap:
                break
            time.sleep(0.2)
    finally:
        results = [run.stop() for run in runs]
    for run, result in zip(runs, results, strict=True):
        run.result = result
    return runs


TARGETS: dict[str, tuple[str, Callable[[float], bool], str]] = {
    "goodput_over_capacity": ("goodput >= 0.95 C while draining", lambda v: v >= 0.95, "drain"),
    "p99_over_idle": ("analytics p99 <= 1.5x idle", lambda v: v <= 1.5, "*"),
    "overload_share": ("overload answers <= 0.5%", lambda v: v <= 0.005, "*"),
    "attempts_per_event": ("attempts per event <= 1.05", lambda v: v <= 1.05, "*"),
    "settle_seconds": ("settles within 10 s of a capacity change", lambda v: v <= 10, "*"),
    "max_second_over_budget": ("budget sum <= budget + 2% every second", lambda v: v <= 1.02, "*"),
}


def check_targets(name: str, fig: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for key, (text, ok, where) in TARGETS.items():
        if key not in fig or (where != "*" and not name.startswith(where)):
            continue
        value = fig[key]
        met = value is not None and ok(value)
        out.append({"scenario": name, "target": text, "value": value, "met": met})
    return out


def plot(name: str, runs: list[Run], c: float) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    for run in runs:
        result = run.result
        t0 = run.started_wall
        secs = [x for x in result["timeline"] if x["t"] >= int(t0)]
        ts = [x["t"] - t0 for x in secs]
        axes[0].plot(ts, [x["accepted"] / c for x in secs], label=run.label)
        axes[2].plot(ts, [(x["p99"] or 0) / (OVERHEAD + BATCH / c) for x in secs], label=run.label)
        lim = [(smp["t"], smp["limit"]) for smp in run.samples if smp.get("limit")]
        if lim and run.strategy.name == "trackrelay adaptive":
            axes[1].plot([a for a, _ in lim], [b / BATCH for _, b in lim], label=run.label)
    axes[0].set_ylabel("accepted events/s / C")
    axes[1].set_ylabel("adaptive window (batches)")
    axes[2].set_ylabel("analytics p99 / idle batch")
    axes[2].set_xlabel("seconds")
    axes[0].legend(fontsize=7, loc="upper right")
    axes[0].set_title(f"{name} (C = {c:g} events/s, batches of {BATCH})")
    slug = name.replace(" ", "-").replace(",", "").replace(".", "")
    return save_plot(plt, fig, PLOTS / f"adaptive-{slug}.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--capacity", type=float, default=500.0, help="analytics events/s (C)")
    ap.add_argument("--quick", action="store_true", help="shorter scenarios (a smoke run)")
    ap.add_argument("--only", help="run scenarios whose name starts with this")
    ap.add_argument("--strategies", type=int, help="run the first N strategies only")
    args = ap.parse_args()
    c = args.capacity
    RESULTS.mkdir(parents=True, exist_ok=True)
    everything: dict[str, Any] = {
        "capacity": c,
        "batch": BATCH,
        "overhead": OVERHEAD,
        "idle_batch_seconds": OVERHEAD + BATCH / c,
        "scenarios": {},
    }
    targets: list[dict[str, Any]] = []
    started = time.monotonic()
    with tempfile.TemporaryDirectory() as tmp:
        for s in scenarios(args.quick):
            if args.only and not s.name.startswith(args.only):
                continue
            print(
                f"-- {s.name}: {len(strategies()) if not s.only_adaptive else 1} runs, "
                f"up to {s.cap:.0f} s",
                flush=True,
            )
            runs = run_scenario(s, strategies()[: args.strategies], c, Path(tmp))
            figs = [figures(r, c) for r in runs]
            cols = [
                "strategy",
                "goodput/C",
                "p99/idle",
                "(after 5 s)",
                "overload",
                "attempts/ev",
                "drain s",
            ]
            extra = [
                k
                for k in (
                    "settle_seconds",
                    "requests_during_outage",
                    "drain_after_recovery_seconds",
                    "max_second_over_budget",
                )
                if any(k in f for f in figs)
            ]
            rows = [
                [
                    f["strategy"],
                    f["goodput_over_capacity"],
                    f["p99_over_idle"],
                    f["p99_over_idle_after_5s"],
                    f"{100 * f['overload_share']:.1f}%",
                    f["attempts_per_event"],
                    f["drain_seconds"] if f["drain_seconds"] is not None else "-",
                    *[f.get(k) if f.get(k) is not None else "-" for k in extra],
                ]
                for f in figs
            ]
            print(table(s.name, cols + extra, rows), flush=True)
            png = plot(s.name, runs, c)
            everything["scenarios"][s.name] = {
                "figures": figs,
                "plot": png.name if png else None,
                "window": runs[0].samples,
            }
            targets += check_targets(s.name, figs[0])
    print()
    print(
        table(
            "targets, trackrelay adaptive",
            ["scenario", "target", "value", "met"],
            [
                [t["scenario"], t["target"], t["value"], "met" if t["met"] else "MISSED"]
                for t in targets
            ],
        )
    )
    everything["targets"] = targets
    everything["seconds"] = time.monotonic() - started
    path = write_json("adaptive", everything)
    print(f"\n{everything['seconds']:.0f} s; results in {path}")


if __name__ == "__main__":
    main()
