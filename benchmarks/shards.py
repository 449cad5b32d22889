"""The queue on one Redis and on a Redis Cluster, side by side in one run: what the cluster
costs the relay and the forwarders, in events/s and in CPU per event.

One shard (today's single stream, ``trackrelay:{events:0}``): the cluster has three
primaries (``redis-server --cluster-enabled``), and every key a script touches lives on
the one that serves the tag's slot. Two paths, each on both stores, interleaved rounds:

- **relay**: a pre-filled outbox on durable PostgreSQL drained by one ``trackrelay
  relay`` process into the queue (AOF, ``appendfsync always``, every node);
- **forwarder**: a pre-filled stream read by one ``trackrelay forwarder`` process that
  pushes to a sink that only counts (``null_sink.py``), so that no simulator's CPU
  shares the two cores.

CPU per event: the user and system time of every process the path ran (Redis nodes,
the relay or forwarder; not this driver), over the events it moved.

    .venv/bin/python benchmarks/shards.py [--events 50000] [--rounds 2]

Prints a table and writes benchmarks/results/shards.json. Target: the cluster's
overhead at one shard <= 5 %. More shards (1, 2, 4) are not built yet.
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
from trackrelay.queue.keys import STREAM
from trackrelay.runtime.ports import free_port

STORES = ("standalone", "cluster")


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
    events: int, run: Callable[[QueueServer], float], kind: str, work: Path, appendonly: bool
) -> dict[str, Any]:
    """Events/s of ``run`` on a fresh store of ``kind``, and the CPU per event of every
    process it started (the store's nodes included: counted once they are stopped)."""
    before = children_cpu()
    with store(kind, work, appendonly) as server:
        rate = run(server)
    cpu = children_cpu() - before
    return {"store": kind, "events_per_s": round(rate), "cpu_us_per_event": cpu / events * 1e6}


def relay_round(events: int, batch: int, work: Path) -> list[dict[str, Any]]:
    pg = PostgresCluster(work / "pg", durable=True).start()
    rows = []
    try:
        for kind in STORES:
            url = filled_database(pg, work, events)

            def drain(server: QueueServer, url: str = url, kind: str = kind) -> float:
                seconds = relays_drain(url, server.url, batch, 1, events, asyncpg_dsn(url))
                with sync_client(server.url) as r:
                    moved = int(r.xlen(STREAM))
                if moved != events:
                    raise SystemExit(f"relay on {kind}: {moved} entries for {events} events")
                return events / seconds

            rows.append({"path": "relay"} | measured(events, drain, kind, work / kind, True))
    finally:
        pg.stop()
    return rows


def forwarder_round(events: int, batch: int, work: Path, sink: str) -> list[dict[str, Any]]:
    rows = []
    for kind in STORES:

        def forward(server: QueueServer) -> float:
            with sync_client(server.url) as r:
                return through_forwarders(r, sink, server.url, 1, events, batch, work)

        rows.append({"path": "forwarder"} | measured(events, forward, kind, work / kind, False))
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

    def median(path: str, kind: str, field: str) -> float:
        picked = [r[field] for r in rows if r["path"] == path and r["store"] == kind]
        return float(statistics.median(picked))

    summary = []
    for path in ("relay", "forwarder"):
        base = median(path, "standalone", "events_per_s")
        for kind in STORES:
            rate = median(path, kind, "events_per_s")
            cpu = median(path, kind, "cpu_us_per_event")
            summary.append([path, kind, round(rate), f"{rate / base:.2f}", f"{cpu:.1f}"])
    print()
    print(
        table(
            f"one shard, standalone Redis vs a Redis Cluster of 3 primaries ({args.events:,}"
            f" relay events, {2 * args.events:,} forwarder events, batch {args.batch_size},"
            f" median of {args.rounds} rounds)",
            ["path", "store", "events/s", "of standalone", "CPU us/event"],
            summary,
        )
    )
    overhead = {
        path: 1
        - median(path, "cluster", "events_per_s") / median(path, "standalone", "events_per_s")
        for path in ("relay", "forwarder")
    }
    print(
        "cluster overhead at one shard: "
        + ", ".join(f"{p} {o:+.1%}" for p, o in overhead.items())
        + " (target <= 5 %)"
    )
    written = write_json("shards", {"args": vars(args), "rows": rows, "overhead": overhead})
    print(f"wrote {written}")


if __name__ == "__main__":
    main()
