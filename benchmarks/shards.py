"""The queue on one Redis and on a Redis Cluster with 1, 2 and 4 shards, side by side in
one run: what the cluster and the shards cost the relay and the forwarders, in events/s
and in CPU per event.

The cluster has three primaries (``redis-server --cluster-enabled``); each shard's keys
(``trackrelay:{events:<n>}``) live on the one that serves its tag's slot. The baseline is
one stream on one Redis. Two paths, each on every store, interleaved rounds:

- **relay**: a pre-filled outbox on durable PostgreSQL drained by one ``trackrelay
  relay`` process into the queue (AOF, ``appendfsync always``, every node);
- **forwarder**: pre-filled streams read by one ``trackrelay forwarder`` process that
  pushes to a sink that only counts (``null_sink.py``), so that no simulator's CPU
  shares the two cores.

CPU per event: the user and system time of every process the path ran (Redis nodes,
the relay or forwarder; not this driver), over the events it moved. Its inverse is the
throughput per core: on two cores, events/s cannot grow with shards, but the cost per
event should stay flat.

    .venv/bin/python benchmarks/shards.py [--events 50000] [--rounds 2]

Prints a table and writes benchmarks/results/shards.json. Targets: the cluster's
overhead at one shard <= 5 %; throughput per core flat from 1 to 4 shards.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import PostgresCluster
from tests.support.redis_cluster import LocalRedisCluster, QueueServer, sync_client

from benchmarks.forwarder import through_forwarders
from benchmarks.harness import REPO, table, write_json
from benchmarks.relay import filled_database, relays_drain
from trackrelay.db.engine import asyncpg_dsn
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import stop_all, wait_http
from trackrelay.queue.keys import first_shards
from trackrelay.runtime.ports import free_port

STORES = (("standalone", 1), ("cluster", 1), ("cluster", 2), ("cluster", 4))
"""(store, shards): the baseline first."""


def label(kind: str, shards: int) -> str:
    return f"{kind} x{shards}"


def children_cpu() -> float:
    """CPU seconds of every child process waited for so far."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@contextmanager
def store(kind: str, work: Path, appendonly: bool) -> Iterator[QueueServer]:
    server: QueueServer
    if kind == "cluster":
        server = LocalRedisCluster(work / "cluster", appendonly=appendonly)
    else:
        server = EmbeddedRedis(work / "redis", appendonly=appendonly)
    with server:
        yield server


def measured(
    events: int,
    run: Callable[[QueueServer], float],
    kind: str,
    shards: int,
    work: Path,
    appendonly: bool,
) -> dict[str, Any]:
    """Events/s of ``run`` on a fresh store of ``kind``, and the CPU per event of every
    process it started (the store's nodes included: counted once they are stopped)."""
    before = children_cpu()
    with store(kind, work, appendonly) as server:
        rate = run(server)
    cpu = children_cpu() - before
    return {
        "store": label(kind, shards),
        "shards": shards,
        "events_per_s": round(rate),
        "cpu_us_per_event": cpu / events * 1e6,
    }


def relay_round(events: int, batch: int, work: Path) -> list[dict[str, Any]]:
    pg = PostgresCluster(work / "pg", durable=True).start()
    rows = []
    try:
        for kind, shards in STORES:
            url = filled_database(pg, work, events)

            def drain(server: QueueServer, url: str = url, shards: int = shards) -> float:
                dsn = asyncpg_dsn(url)
                seconds = relays_drain(url, server.url, batch, 1, events, dsn, shards)
                with sync_client(server.url) as r:
                    moved = [int(r.xlen(s.stream)) for s in first_shards(shards)]
                if sum(moved) != events or 0 in moved:
                    raise SystemExit(f"relay: {moved} entries in the shards for {events} events")
                return events / seconds

            where = work / f"{kind}{shards}"
            rows.append({"path": "relay"} | measured(events, drain, kind, shards, where, True))
    finally:
        pg.stop()
    return rows


def forwarder_round(events: int, batch: int, work: Path, sink: str) -> list[dict[str, Any]]:
    rows = []
    for kind, shards in STORES:

        def forward(server: QueueServer, shards: int = shards) -> float:
            with sync_client(server.url) as r:
                return through_forwarders(r, sink, server.url, 1, events, batch, work, shards)

        where = work / f"{kind}{shards}"
        rows.append({"path": "forwarder"} | measured(events, forward, kind, shards, where, False))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--batch-size", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2, help="interleaved rounds (the median)")
    args = ap.parse_args()
    port = free_port()
    sink_url = f"http://127.0.0.1:{port}"
    sink = subprocess.Popen([sys.executable, str(REPO / "benchmarks" / "null_sink.py"), str(port)])
    rows: list[dict[str, Any]] = []
    try:
        wait_http(f"{sink_url}/admin/state", 30, sink)
        for n in range(args.rounds):
            print(f"round {n + 1} of {args.rounds}", flush=True)
            with tempfile.TemporaryDirectory() as tmp:
                work = Path(tmp)
                got = relay_round(args.events, args.batch_size, work / "relay")
                got += forwarder_round(args.events * 2, args.batch_size, work / "fwd", sink_url)
            for row in got:
                print(
                    f"  {row['path']} on {row['store']}: {row['events_per_s']:,} ev/s,"
                    f" {row['cpu_us_per_event']:.1f} us CPU/event",
                    flush=True,
                )
            rows += [r | {"round": n + 1} for r in got]
    finally:
        stop_all([sink])

    def median(path: str, store: str, field: str) -> float:
        picked = [r[field] for r in rows if r["path"] == path and r["store"] == store]
        return float(statistics.median(picked))

    summary = []
    base_label = label(*STORES[0])
    for path in ("relay", "forwarder"):
        base = median(path, base_label, "events_per_s")
        base_cpu = median(path, base_label, "cpu_us_per_event")
        for kind, shards in STORES:
            rate = median(path, label(kind, shards), "events_per_s")
            cpu = median(path, label(kind, shards), "cpu_us_per_event")
            summary.append(
                [
                    path,
                    kind,
                    shards,
                    round(rate),
                    f"{rate / base:.2f}",
                    f"{cpu:.1f}",
                    f"{1e6 / cpu:,.0f}",
                    f"{base_cpu / cpu:.2f}",
                ]
            )
    print()
    print(
        table(
            f"standalone Redis vs a Redis Cluster of 3 primaries with 1, 2, 4 shards"
            f" ({args.events:,} relay events, {2 * args.events:,} forwarder events, batch"
            f" {args.batch_size}, median of {args.rounds} rounds)",
            [
                "path",
                "store",
                "shards",
                "events/s",
                "of standalone",
                "CPU us/event",
                "events/s per core",
                "per core, of standalone",
            ],
            summary,
        )
    )
    overhead = {
        path: 1
        - median(path, label("cluster", 1), "events_per_s")
        / median(path, base_label, "events_per_s")
        for path in ("relay", "forwarder")
    }
    per_core = {
        path: median(path, label("cluster", 1), "cpu_us_per_event")
        / median(path, label("cluster", 4), "cpu_us_per_event")
        for path in ("relay", "forwarder")
    }
    print(
        "cluster overhead at one shard: "
        + ", ".join(f"{p} {o:+.1%}" for p, o in overhead.items())
        + " (target <= 5 %); per core at 4 shards, of 1: "
        + ", ".join(f"{p} {o:.2f}" for p, o in per_core.items())
        + " (target flat: 1.00)"
    )
    written = write_json(
        "shards",
        {"args": vars(args), "rows": rows, "overhead": overhead, "per_core_4_of_1": per_core},
    )
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
