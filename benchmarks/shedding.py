"""Shedding under a storage quota: every policy and the automatic mode, side by side.

Zipf-distributed SKU load (10,000 SKUs, exponent 1.1) arrives at 10x what
analytics can take, for ``--seconds``, with a queue quota that holds a small
fraction of the backlog. Each policy gets its own Redis (``noeviction``,
``maxmemory`` above the quota), order store, relay process, forwarder and
analytics simulator; orders are written through the store's real order path.
Once the load stops, analytics drains what the queue still holds (up to
``--drain`` seconds). Then popularity as analytics computes it (sum of
``qty * weight`` per SKU) is compared with the truth from the order database.

    .venv/bin/python benchmarks/shedding.py [--seconds 120] [--capacity 100] [--quota 2MiB]
        [--scenario zipf|unique|outage] [--skus 10000] [--only auto,...]

Scenarios: ``zipf`` (the load above, ``--skus`` SKUs); ``unique`` (adversarial: every
line a SKU never seen before, 128 characters long); ``outage`` (analytics down for the
whole load, orders as fast as the order path takes them, then analytics back). Each
run's outbox has the quota derived from the queue's (none is given), and every sample
checks queue memory and outbox rows against their limits. Counts from the bounded
sketch carry error bounds: every count analytics returned must bracket the truth.

Per policy: the largest queue memory / quota of the per-second exact samples,
lines shed for good, Jaccard of the top-100 SKUs, relative error of the total
quantity and the largest relative error over the true top-100. Prints a table,
writes benchmarks/results/shedding.json and benchmarks/plots/shedding-memory.png.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import collections
import itertools
import json
import random
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from redis.asyncio import Redis

from benchmarks.harness import PLOTS, http, pyplot, save_plot, table, write_json
from trackrelay.config.settings import derived_outbox_quota, resolve_database_url
from trackrelay.control.shedding import parse_size
from trackrelay.db import engine as database
from trackrelay.db import migrate
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.local.report import jaccard_top
from trackrelay.local.runner import redis_maxmemory
from trackrelay.orders import audit, store
from trackrelay.orders.models import OrderRequest
from trackrelay.queue import views
from trackrelay.queue.keys import AGG_WINDOWS_KEY, RELAY_STATS_PREFIX, STREAM
from trackrelay.queue.quota import exact_usage
from trackrelay.relay import outbox
from trackrelay.runtime.ports import free_port

POLICIES: dict[str, dict[str, str]] = {
    "none": {"TRACKRELAY_SHEDDING": "none"},
    "sample": {"TRACKRELAY_SHEDDING": "sample"},
    "aggregate": {"TRACKRELAY_SHEDDING": "aggregate"},
    "evict": {"TRACKRELAY_SHEDDING": "evict"},
    "drop_new": {"TRACKRELAY_SHEDDING": "drop_new"},
    "auto": {"TRACKRELAY_SHEDDING": "auto"},
    "auto, sampling band": {"TRACKRELAY_SHEDDING": "auto", "TRACKRELAY_SHED_SAMPLE_AT": "0.3"},
}
"""Each run's shedding settings: the policies, the automatic mode, and the automatic mode
with a sampling band from 30 % of the quota (the default ladder has none)."""
SKUS = 10_000
EXPONENT = 1.1
TOP = 100
BATCH = 100
LANES = 2
"""The forwarder's batch size and lanes: at most BATCH x LANES entries pending at once."""


class Zipf:
    """SKU ranks 1..n drawn with probability proportional to rank^-s."""

    def __init__(self, n: int, s: float, rng: random.Random) -> None:
        self.cumulative = list(itertools.accumulate(1.0 / k**s for k in range(1, n + 1)))
        self.rng = rng

    def sku(self) -> str:
        rank = bisect.bisect(self.cumulative, self.rng.random() * self.cumulative[-1])
        return f"sku-{rank + 1:05d}"


class Unique:
    """Every draw a SKU never drawn before, 128 characters long (the adversary of
    aggregation: no two lines share a counter)."""

    def __init__(self) -> None:
        self.n = 0

    def sku(self) -> str:
        self.n += 1
        return f"u{self.n:09d}-".ljust(128, "x")


SCENARIOS = ("zipf", "unique", "outage")


@dataclass
class Run:
    policy: str
    workdir: Path
    capacity: float
    quota: int
    outbox_limit: int = 0
    samples: list[dict[str, Any]] = field(default_factory=list)
    procs: list[Any] = field(default_factory=list)

    def start(self) -> None:
        self.redis_server = EmbeddedRedis(
            self.workdir / "redis", maxmemory=redis_maxmemory(self.quota)
        ).start()
        self.db = resolve_database_url(None, self.workdir)
        migrate.upgrade(self.db)
        sim_port = free_port()
        self.sim_url = f"http://127.0.0.1:{sim_port}"
        logs = self.workdir / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        self.procs.append(
            spawn_role(
                ["analytics-sim", "--port", str(sim_port), "--rate", f"{self.capacity:g}"],
                {},
                logs / "sim.log",
            )
        )
        wait_http(f"{self.sim_url}/healthz", 30, self.procs[-1])
        common = {"TRACKRELAY_REDIS_URL": self.redis_server.url}
        self.procs.append(
            spawn_role(
                ["relay", "--no-migrate", "--owner", "bench-relay"],
                common
                | {
                    "TRACKRELAY_DATABASE_URL": self.db,
                    "TRACKRELAY_QUEUE_QUOTA": str(self.quota),
                    "TRACKRELAY_QUEUE_READ_AHEAD": str(BATCH * LANES),
                }
                | POLICIES[self.policy],
                logs / "relay.log",
            )
        )
        self.procs.append(
            spawn_role(
                ["forwarder"],
                common
                | {
                    "TRACKRELAY_ANALYTICS_URL": self.sim_url,
                    "TRACKRELAY_BATCH_SIZE": str(BATCH),
                    "TRACKRELAY_CONCURRENCY": str(LANES),
                    "TRACKRELAY_METRICS_PORT": str(free_port()),
                },
                logs / "forwarder.log",
            )
        )

    def stop(self) -> None:
        stop_all(self.procs)
        self.redis_server.stop()

    async def sample(self, r: Redis, t: float, phase: str, engine: Any) -> dict[str, Any]:
        used = await exact_usage(r)
        relays = await views.read_stats(r, RELAY_STATS_PREFIX)
        view = next(iter(relays.values()), {})
        rows = await outbox.count_outbox(engine)
        row = {
            "t": round(t, 1),
            "phase": phase,
            "share": used / self.quota,
            "outbox": rows,
            "outbox_share": rows / self.outbox_limit,
            "policy": view.get("policy"),
            "p": view.get("p"),
            "shed": view.get("shed", {}),
            "stream": await r.xlen(STREAM),
            "windows": await r.zcard(AGG_WINDOWS_KEY),
        }
        self.samples.append(row)
        return row


async def load(
    engine: Any, zipf: Zipf | Unique, rng: random.Random, lines_per_s: float, seconds: float
) -> int:
    """Orders of 1-4 lines (qty 1-3) at ``lines_per_s`` (inf: as fast as the order path
    takes them), through the order path; lines written. Any order refused fails the run."""
    written = 0
    sem = asyncio.Semaphore(32)
    tasks: set[asyncio.Task[None]] = set()

    async def one(n: int, lines: list[tuple[str, int]]) -> None:
        req = OrderRequest.model_validate(
            {
                "customer_id": f"shopper-{n}",
                "items": [{"sku": s, "qty": q, "price": 100} for s, q in lines],
            }
        )
        async with sem:
            await store.create_order(engine, req, None)

    start = time.monotonic()
    n = 0
    while (elapsed := time.monotonic() - start) < seconds:
        while written < lines_per_s * elapsed and len(tasks) < 256:
            lines = [(zipf.sku(), rng.randint(1, 3)) for _ in range(rng.randint(1, 4))]
            n += 1
            written += len(lines)
            task = asyncio.create_task(one(n, lines))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
        await asyncio.sleep(0.02)
    await asyncio.gather(*tasks)
    return written


def top(pop: dict[str, float], n: int) -> set[str]:
    return {sku for sku, _ in sorted(pop.items(), key=lambda kv: (-kv[1], kv[0]))[:n]}


async def run_policy(
    run: Run, seconds: float, drain: float, seed: int, scenario: str, skus: int
) -> dict[str, Any]:
    await asyncio.to_thread(run.start)
    r = Redis.from_url(run.redis_server.url)
    engine = database.make_engine(run.db)
    try:
        await asyncio.sleep(2.0)  # relay and forwarder connect
        rng = random.Random(seed)
        draw: Zipf | Unique = Unique() if scenario == "unique" else Zipf(skus, EXPONENT, rng)
        rate = 10 * run.capacity
        if scenario == "outage":
            http(f"{run.sim_url}/admin/fault", {"mode": "down"})
            rate = float("inf")  # the shop at full speed while analytics is down
        started = time.monotonic()
        producing = asyncio.create_task(load(engine, draw, rng, rate, seconds))
        while not producing.done():
            await run.sample(r, time.monotonic() - started, "load", engine)
            await asyncio.sleep(1.0)
        lines = await producing
        load_s = time.monotonic() - started
        if scenario == "outage":
            http(f"{run.sim_url}/admin/fault", {"mode": "slow", "latency": 0.0})
        drained_at = None
        while time.monotonic() - started < load_s + drain:
            row = await run.sample(r, time.monotonic() - started, "drain", engine)
            left = await outbox.count_outbox(engine)
            if left == 0 and row["stream"] == 0 and row["windows"] == 0:
                drained_at = time.monotonic() - started - load_s
                break
            await asyncio.sleep(1.0)
        await asyncio.sleep(1.5)  # the last push lands; the relay publishes its counts
        final = await run.sample(r, time.monotonic() - started, "end", engine)
        outbox_left = await outbox.count_outbox(engine)
        real = await audit.popularity(engine)
        pop = http(f"{run.sim_url}/v1/popularity?top=100000")
        state = http(f"{run.sim_url}/admin/state")
    finally:
        await r.aclose()
        await engine.dispose()
        run.stop()
    seen = {t["sku"]: float(t["qty"]) for t in pop["top"]}
    bounds = {
        t["sku"]: (float(t.get("min_qty", t["qty"])), float(t.get("max_qty", t["qty"])))
        for t in pop["top"]
    }
    true_top = top(real, TOP)
    total_true = sum(real.values())
    # The truth lies within the bounds analytics states: [min_qty, max_qty] for a SKU it
    # counted, [0, unlisted_max] for one it did not (or did not return).
    # Lines shed for good (counted by reason) also leave counts below the truth: "under"
    # is only a miss when nothing was shed; "over" (a count above the truth by more than
    # its error) is one always.
    unlisted = float(pop.get("unlisted_max", 0.0))
    over = sum(1 for sku, qty in real.items() if bounds.get(sku, (0.0, 0.0))[0] > qty + 1e-6)
    under = sum(1 for sku, qty in real.items() if qty > bounds.get(sku, (0.0, unlisted))[1] + 1e-6)
    shed = collections.Counter[str]()
    for key, n in final["shed"].items():
        shed[key.split(":")[2]] += n
    lost = sum(n for reason, n in shed.items() if reason != "folded")
    return {
        "policy": run.policy,
        "lines": lines,
        "offered_lines_per_s": round(lines / load_s, 1),
        "scenario": scenario,
        "max_memory_over_quota": round(max(s["share"] for s in run.samples), 3),
        "outbox_limit": run.outbox_limit,
        "max_outbox_over_limit": round(max(s["outbox_share"] for s in run.samples), 3),
        "recall_top100": round(len(true_top & top(seen, TOP)) / len(true_top), 3),
        "counts_over_bound": over,
        "counts_under_bound": under,
        "counts_with_bounds": sum(1 for low, high in bounds.values() if low != high),
        "unlisted_max": unlisted,
        "samples": len(run.samples),
        "lines_shed": int(lost),
        "lines_folded": int(shed["folded"]),
        "shed_by_reason": dict(shed),
        "events_delivered": state["accepted"],
        "lines_delivered": state["lines"],
        "outbox_left": outbox_left,
        "drain_seconds": None if drained_at is None else round(drained_at, 1),
        "jaccard_top100": round(jaccard_top(real, seen, TOP), 3),
        "total_qty_error": round(abs(sum(seen.values()) - total_true) / total_true, 4),
        "max_top100_error": round(
            max(abs(seen.get(sku, 0.0) - real[sku]) / real[sku] for sku in true_top), 3
        ),
        "policies_seen": sorted({s["policy"] for s in run.samples if s["policy"]}),
    }


def plot(series: dict[str, list[dict[str, Any]]], name: str, title: str) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, ax = plt.subplots(figsize=(10, 5))
    for policy, samples in series.items():
        ax.plot([s["t"] for s in samples], [s["share"] for s in samples], label=policy)
    ax.axhline(1.0, color="black", linestyle="--", linewidth=1, label="quota")
    ax.set_xlabel("seconds (load, then drain)")
    ax.set_ylabel("queue memory / quota (exact, every second)")
    ax.set_ylim(0, 1.1)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title(f"Queue memory against the quota: {title}", fontsize=9)
    return save_plot(plt, fig, PLOTS / f"{name}-memory.png")


TARGETS = {
    "memory": "memory / quota <= 1.0 at every sample, every policy",
    "outbox": "outbox rows / its limit <= 1.0 at every sample",
    "bounds": "every count within its reported bounds (below them only by lines shed)",
    "auto_recall": "auto: top-100 recall >= 0.99",
    "auto_total": "auto: total quantity error <= 1%",
    "drains": "the adversarial run drains completely once analytics keeps up",
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seconds", type=float, default=120.0, help="seconds of load per policy")
    ap.add_argument("--capacity", type=float, default=100.0, help="analytics events/s")
    ap.add_argument("--quota", default="1MiB", help="queue quota (default 1MiB)")
    ap.add_argument("--drain", type=float, default=150.0, help="longest drain after the load")
    ap.add_argument("--only", help="comma-separated runs, e.g. auto,none (default: all)")
    ap.add_argument("--scenario", choices=SCENARIOS, default="zipf", help="the load (see above)")
    ap.add_argument("--skus", type=int, default=SKUS, help="SKUs of the Zipf load")
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument(
        "--with-earlier",
        type=Path,
        help="a shedding.json of an earlier run (same load): its runs not run now join the table",
    )
    args = ap.parse_args()
    quota = parse_size(args.quota)
    policies = args.only.split(",") if args.only else list(POLICIES)
    unknown = set(policies) - set(POLICIES)
    if unknown:
        sys.exit(f"unknown runs {sorted(unknown)}: choose from {list(POLICIES)}")
    runs: list[Run] = []
    results: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(dir="/dev/shm" if Path("/dev/shm").is_dir() else None) as tmp:
        for policy in policies:
            print(
                f"-- {policy}: {args.seconds:g} s of load at 10x {args.capacity:g} ev/s", flush=True
            )
            run = Run(
                policy, Path(tempfile.mkdtemp(dir=tmp)), args.capacity, quota,
                derived_outbox_quota(quota),
            )  # fmt: skip
            results.append(
                asyncio.run(
                    run_policy(run, args.seconds, args.drain, args.seed, args.scenario, args.skus)
                )
            )
            runs.append(run)
    series = {run.policy: run.samples for run in runs}
    if args.with_earlier:
        earlier = json.loads(args.with_earlier.read_text())
        for x in earlier["results"]:
            if x["policy"] not in series:
                results.append(x | {"earlier_run": earlier["machine"]["when"]})
                series[x["policy"]] = earlier["samples"][x["policy"]]
        results.sort(key=lambda x: list(POLICIES).index(x["policy"]))
    cols = [
        "policy",
        "lines/s",
        "max mem/quota",
        "max outbox/limit",
        "lines shed",
        "folded",
        "delivered ev",
        "outbox left",
        "drain s",
        "top-100 Jaccard",
        "total qty err",
        "max top-100 err",
        "top-100 recall",
        "over / under bound",
    ]
    rows = [
        [
            x["policy"],
            x["offered_lines_per_s"],
            x["max_memory_over_quota"],
            x.get("max_outbox_over_limit", "-"),
            x["lines_shed"],
            x["lines_folded"],
            x["events_delivered"],
            x["outbox_left"],
            x["drain_seconds"] if x["drain_seconds"] is not None else "-",
            x["jaccard_top100"],
            f"{100 * x['total_qty_error']:.2f}%",
            f"{100 * x['max_top100_error']:.1f}%",
            x.get("recall_top100", "-"),
            f"{x.get('counts_over_bound', '-')} / {x.get('counts_under_bound', '-')}",
        ]
        for x in results
    ]
    load = {
        "zipf": f"Zipf({EXPONENT}) over {args.skus:,} SKUs at 10x analytics "
        f"({args.capacity:g} ev/s)",
        "unique": f"unique 128-character SKUs at 10x analytics ({args.capacity:g} ev/s)",
        "outage": f"analytics down, orders at full speed, Zipf({EXPONENT}) over {args.skus:,} SKUs",
    }[args.scenario]
    title = f"Shedding: {args.seconds:g} s of {load}, quota {args.quota}"
    print(table(title, cols, rows), flush=True)
    checks = []
    for x in results:
        checks.append((TARGETS["memory"] + f" [{x['policy']}]", x["max_memory_over_quota"] <= 1.0))
        checks.append((TARGETS["outbox"] + f" [{x['policy']}]", x["max_outbox_over_limit"] <= 1.0))
        within = x["counts_over_bound"] == 0 and (x["counts_under_bound"] == 0 or x["lines_shed"])
        checks.append((TARGETS["bounds"] + f" [{x['policy']}]", within))
        if x["policy"] == "auto" and args.scenario != "unique":
            checks.append((TARGETS["auto_recall"], x["recall_top100"] >= 0.99))
            checks.append((TARGETS["auto_total"], x["total_qty_error"] <= 0.01))
        if args.scenario == "unique":
            drained = x["drain_seconds"] is not None and x["outbox_left"] == 0
            checks.append((TARGETS["drains"] + f" [{x['policy']}]", drained))
    print()
    for what, ok in checks:
        print(f"{'met   ' if ok else 'MISSED'} {what}")
    default = args.scenario == "zipf" and args.skus == SKUS
    name = "shedding" if default else f"shedding-{args.scenario}"
    png = plot({x["policy"]: series[x["policy"]] for x in results}, name, load)
    path = write_json(
        name,
        {
            "scenario": args.scenario,
            "seconds": args.seconds,
            "capacity": args.capacity,
            "quota": quota,
            "skus": args.skus,
            "exponent": EXPONENT,
            "results": results,
            "targets": [{"target": w, "met": ok} for w, ok in checks],
            "samples": series,
            "plot": png.name if png else None,
        },
    )
    print(f"\nJSON: {path}" + (f"\nplot: {png}" if png else ""))


if __name__ == "__main__":
    main()
