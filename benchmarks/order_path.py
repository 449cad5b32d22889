"""Order path benchmark: trackrelay vs a synchronous baseline, analytics healthy/slow/down.

One run measures orders/s and p50/p99 latency of
  (a) trackrelay's order service (outbox + relay; forwarders pushing to analytics),
  (b) the same service with the outbox write removed (the outbox's own cost),
  (c) the naive baseline that calls analytics inside the request (benchmarks/sync_baseline.py),
with the analytics simulator healthy, slow (0.5 s) and down (503), all on PostgreSQL.
Then, with the forwarders stopped (they are other services; in a cluster they run
on other nodes), (a) against (b) alone: the outbox's own cost on equal CPU; and
(a) on durable stores (PostgreSQL with fsync and synchronous_commit on, Redis with
AOF ``appendfsync always``) beside (a) on the fast stores the other rows use
(PostgreSQL fsync, synchronous_commit and full_page_writes off, Redis without AOF).

    .venv/bin/python benchmarks/order_path.py [--seconds 6] [--rounds 4] [--connections 32]

Prints a table and writes benchmarks/results/order_path.json. Needs wrk, PostgreSQL and Redis.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import DURABLE_SETTINGS, FAST_SETTINGS, PostgresCluster

from benchmarks.harness import REPO, require, table, write_json, wrk
from trackrelay.config.settings import resolve_database_url
from trackrelay.db.migrate import upgrade
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.runtime.ports import free_port

ORDER = json.dumps(
    {
        "customer_id": "bench",
        "items": [
            {"sku": "sku-1", "qty": 1, "price": 1999},
            {"sku": "sku-2", "qty": 2, "price": 500},
        ],
    }
)
SCENARIOS: dict[str, dict[str, Any]] = {
    "healthy": {"mode": "healthy"},
    "slow 0.5s": {"mode": "slow", "latency": 0.5},
    "down (503)": {"mode": "down"},
}
VARIANTS = ("trackrelay", "no-outbox", "sync")
OUTBOX_PAIR = ("trackrelay", "no-outbox")
DURABLE = "trackrelay durable"
RELAY_APART = "relay apart durable"
DURABLE_VARIANTS: dict[str, tuple[str, int]] = {
    DURABLE: ("trackrelay", 1),  # relay in the request process, as `trackrelay orders`
    "no-relay durable": ("no-relay", 1),  # `trackrelay orders --no-relay`
    RELAY_APART: ("relay-apart", 1),  # `trackrelay orders --no-relay` + `trackrelay relay`
    "bare durable": ("bare", 1),  # benchmarks/bare_service.py
    "trackrelay durable x2": ("cli", 2),  # `trackrelay orders --workers 2`: relay apart
    "bare durable x2": ("bare", 2),
    "trackrelay sqlite": ("trackrelay", 1),  # the embedded default, printed, not targeted
}
"""Durable stores, no forwarder: trackrelay against the bare service, at 1 and 2 workers."""
NO_FORWARDER_SET = (*OUTBOX_PAIR, *DURABLE_VARIANTS)
NO_FORWARDER = "no forwarder"


def set_fault(sim_url: str, fault: dict[str, Any]) -> None:
    req = urllib.request.Request(
        f"{sim_url}/admin/fault",
        data=json.dumps(fault).encode(),
        headers={"content-type": "application/json"},
    )
    urllib.request.urlopen(req, timeout=5).close()


def median(values: list[float]) -> float:
    return round(statistics.median(values), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=int, default=6, help="length of one wrk run")
    ap.add_argument(
        "--rounds", type=int, default=4, help="interleaved rounds; each cell reports the median"
    )
    ap.add_argument("--connections", type=int, default=32)
    ap.add_argument(
        "--forwarders",
        type=int,
        default=1,
        help="forwarder processes beside trackrelay's order service",
    )
    args = ap.parse_args()
    require("wrk", "wrk")
    work = Path(tempfile.mkdtemp(prefix="trackrelay-bench-"))
    pg = PostgresCluster(work / "pg").start()
    redis = EmbeddedRedis(work / "redis", appendonly=False).start()
    durable_pg = PostgresCluster(work / "pg-durable", durable=True).start()
    durable_redis = EmbeddedRedis(work / "redis-durable", appendonly=True).start()
    children: list[subprocess.Popen[bytes]] = []
    runs: list[dict[str, Any]] = []
    try:
        sim_port = free_port()
        sim_url = f"http://127.0.0.1:{sim_port}"
        sim = spawn_role(["analytics-sim", "--port", str(sim_port)], {}, work / "sim.log")
        children.append(sim)
        wait_http(f"{sim_url}/healthz", 30, sim)
        urls = {}
        for variant in (*VARIANTS, *DURABLE_VARIANTS):  # all at once; one loaded at a time
            kind, workers = DURABLE_VARIANTS.get(variant, (variant, 1))
            cluster, queue = (
                (durable_pg, durable_redis) if variant in DURABLE_VARIANTS else (pg, redis)
            )
            db = (
                f"sqlite:///{work / 'orders.db'}"
                if variant == "trackrelay sqlite"
                else cluster.create_database()
            )
            upgrade(resolve_database_url(db, work))
            port = free_port()
            if kind == "cli":
                server = spawn_role(
                    ["orders", "--workers", str(workers), "--port", str(port), "--no-migrate"],
                    {
                        "TRACKRELAY_DATABASE_URL": db,
                        "TRACKRELAY_REDIS_URL": queue.url,
                        "TRACKRELAY_DATA_DIR": str(work / "cli"),
                    },
                    work / "orders-cli.log",
                )
            else:
                if kind == "relay-apart":  # the relay as a process of its own, beside
                    children.append(
                        spawn_role(
                            ["relay"],
                            {"TRACKRELAY_DATABASE_URL": db, "TRACKRELAY_REDIS_URL": queue.url},
                            work / "relay-apart.log",
                        )
                    )
                server = subprocess.Popen(
                    [
                        sys.executable,
                        str(REPO / "benchmarks" / "serve.py"),
                        "no-relay" if kind == "relay-apart" else kind,
                        str(port),
                        db,
                        queue.url,
                        sim_url,
                        str(workers),
                    ],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            children.append(server)
            wait_http(f"http://127.0.0.1:{port}/openapi.json", 30, server)
            urls[variant] = f"http://127.0.0.1:{port}/v1/orders"
        forwarders = [
            spawn_role(
                ["forwarder"],
                {"TRACKRELAY_REDIS_URL": redis.url, "TRACKRELAY_ANALYTICS_URL": sim_url},
                work / "forwarder.log",
            )
            for _ in range(args.forwarders)
        ]
        children += forwarders
        set_fault(sim_url, SCENARIOS["healthy"])
        for url in urls.values():
            wrk(url, ORDER, 2, args.connections)  # warm-up
        # Interleaved, so drift (caches, table growth, other load) hits every cell alike.
        for round_no in range(args.rounds):
            for scenario, fault in SCENARIOS.items():
                set_fault(sim_url, fault)
                time.sleep(0.5)
                for variant in VARIANTS:
                    url = urls[variant]
                    run = {
                        "round": round_no,
                        "variant": variant,
                        "analytics": scenario,
                        **wrk(url, ORDER, args.seconds, args.connections),
                    }
                    print(
                        f"  round {round_no} {variant:10s} {scenario:11s} "
                        f"ok/s {run['ok_per_s']:8.1f} p99 {run['p99_ms']:8.1f} ms",
                        flush=True,
                    )
                    runs.append(run)
        # The outbox's own cost. Forwarders are other services (other nodes in a
        # cluster): stopped here, so both variants get the same two cores.
        stop_all(forwarders)
        set_fault(sim_url, SCENARIOS["healthy"])
        for round_no in range(args.rounds):
            for variant in NO_FORWARDER_SET:
                run = {
                    "round": round_no,
                    "variant": variant,
                    "analytics": NO_FORWARDER,
                    **wrk(urls[variant], ORDER, args.seconds, args.connections),
                }
                print(
                    f"  round {round_no} {variant:22s} {NO_FORWARDER:11s} "
                    f"ok/s {run['ok_per_s']:8.1f}",
                    flush=True,
                )
                runs.append(run)
    finally:
        stop_all(children)
        for queue in (redis, durable_redis):
            queue.stop()
        for cluster in (pg, durable_pg):
            cluster.stop()

    results: list[dict[str, Any]] = []
    cells = [(v, sc) for v in VARIANTS for sc in SCENARIOS] + [
        (v, NO_FORWARDER) for v in NO_FORWARDER_SET
    ]
    for variant, scenario in cells:
        same = [r for r in runs if r["variant"] == variant and r["analytics"] == scenario]
        results.append(
            {
                "variant": variant,
                "analytics": scenario,
                **{
                    k: median([r[k] for r in same])
                    for k in ("ok_per_s", "p50_ms", "p99_ms", "failed_pct")
                },
            }
        )

    def cell(variant: str, scenario: str, key: str) -> float:
        return next(
            float(r[key]) for r in results if r["variant"] == variant and r["analytics"] == scenario
        )

    down_vs_healthy = cell("trackrelay", "down (503)", "p99_ms") / cell(
        "trackrelay", "healthy", "p99_ms"
    )
    outbox_cost = cell("trackrelay", NO_FORWARDER, "ok_per_s") / cell(
        "no-outbox", NO_FORWARDER, "ok_per_s"
    )
    with_forwarder = cell("trackrelay", "healthy", "ok_per_s") / cell(
        "no-outbox", "healthy", "ok_per_s"
    )
    durable_cost = cell(DURABLE, NO_FORWARDER, "ok_per_s") / cell(
        "trackrelay", NO_FORWARDER, "ok_per_s"
    )

    def versus(a: str, b: str, key: str) -> float:
        return round(cell(a, NO_FORWARDER, key) / cell(b, NO_FORWARDER, key), 3)

    bare = {
        "no_relay_over_bare_throughput": versus("no-relay durable", "bare durable", "ok_per_s"),
        "no_relay_over_bare_p99": versus("no-relay durable", "bare durable", "p99_ms"),
        "trackrelay_over_bare_throughput": versus(DURABLE, "bare durable", "ok_per_s"),
        "trackrelay_over_bare_p99": versus(DURABLE, "bare durable", "p99_ms"),
        "relay_apart_over_bare_throughput": versus(RELAY_APART, "bare durable", "ok_per_s"),
        "relay_apart_over_bare_p99": versus(RELAY_APART, "bare durable", "p99_ms"),
        "workers2_over_bare2_throughput": versus(
            "trackrelay durable x2", "bare durable x2", "ok_per_s"
        ),
        "workers2_over_bare2_p99": versus("trackrelay durable x2", "bare durable x2", "p99_ms"),
        "workers2_over_workers1_throughput": versus("trackrelay durable x2", DURABLE, "ok_per_s"),
    }
    stores_used = {
        "fast": f"PostgreSQL {FAST_SETTINGS}; Redis appendonly no",
        "durable": f"PostgreSQL {DURABLE_SETTINGS}; Redis appendonly yes, appendfsync always",
    }
    targets = {
        **bare,
        "target_over_bare_throughput_min": 0.9,
        "target_over_bare_p99_max": 1.25,
        "durable_over_fast_throughput": round(durable_cost, 3),
        "trackrelay_p99_down_over_healthy": round(down_vs_healthy, 3),
        "target_p99_down_over_healthy_max": 1.1,
        "trackrelay_throughput_over_no_outbox": round(outbox_cost, 3),
        "target_throughput_over_no_outbox_min": 0.9,
        "with_forwarder_on_same_cores_throughput_over_no_outbox": round(with_forwarder, 3),
    }
    print()
    print(
        table(
            f"Order path, PostgreSQL, wrk -c{args.connections} -d{args.seconds}s, median of "
            f"{args.rounds} interleaved rounds ({args.forwarders} forwarder beside trackrelay)",
            ["service", "analytics", "orders/s ok", "p50 ms", "p99 ms", "failed %"],
            [
                [
                    r["variant"],
                    r["analytics"],
                    r["ok_per_s"],
                    r["p50_ms"],
                    r["p99_ms"],
                    r["failed_pct"],
                ]
                for r in results
            ],
        )
    )
    print()
    print(f"stores: fast = {stores_used['fast']}")
    print(f"        durable = {stores_used['durable']} (the '{DURABLE}' row)")
    print(f"trackrelay durable / fast throughput: {durable_cost:.2f}")
    print(
        "trackrelay / bare (durable, no forwarder; target orders/s >= 0.9, p99 <= 1.25):\n"
        f"  orders --no-relay  orders/s {bare['no_relay_over_bare_throughput']:.2f}"
        f"  p99 {bare['no_relay_over_bare_p99']:.2f}\n"
        f"  orders (relay in)  orders/s {bare['trackrelay_over_bare_throughput']:.2f}"
        f"  p99 {bare['trackrelay_over_bare_p99']:.2f}\n"
        f"  relay apart        orders/s {bare['relay_apart_over_bare_throughput']:.2f}"
        f"  p99 {bare['relay_apart_over_bare_p99']:.2f}\n"
        f"  2 workers          orders/s {bare['workers2_over_bare2_throughput']:.2f}"
        f"  p99 {bare['workers2_over_bare2_p99']:.2f}"
        f"  (2 workers / 1: {bare['workers2_over_workers1_throughput']:.2f})"
    )
    print(f"trackrelay p99 down/healthy: {down_vs_healthy:.2f} (target <= 1.1)")
    print(
        f"trackrelay throughput / no-outbox: {outbox_cost:.2f} (target >= 0.9; "
        f"{with_forwarder:.2f} with a forwarder on the same cores)"
    )
    path = write_json(
        "order_path",
        {
            "args": vars(args),
            "stores": stores_used,
            "results": results,
            "runs": runs,
            "targets": targets,
        },
    )
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
