"""Forwarder throughput: events/s through one and two forwarder processes.

Against the analytics simulator at unlimited capacity, and against a sink that only
counts the events it is sent (``null_sink.py``: what the simulator's own CPU costs on
the shared cores), next to the raw Redis limit measured in the same run (XREADGROUP +
XACK/XDEL in a loop, no HTTP).

    .venv/bin/python benchmarks/forwarder.py [--events 200000] [--batch-size 500]

Prints a table and writes benchmarks/results/forwarder.json. Target: >= 20,000
events/s for one forwarder process on a 2-core machine.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import redis

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.harness import REPO, add_events, table, write_json
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.queue.keys import CONSUMER_GROUP, SHARDS_KEY, STREAM, first_shards
from trackrelay.runtime.ports import free_port

SIMULATOR = "forwarder -> simulator (unlimited)"
NULL_SINK = "forwarder -> sink that only counts"


def preload(r: redis.Redis, count: int, tag: str, shards: int = 1) -> None:
    """``count`` events in a queue of ``shards`` (recorded, as a relay would)."""
    r.set(SHARDS_KEY, shards)
    for shard in first_shards(shards):
        r.delete(shard.stream)
        r.xgroup_create(shard.stream, CONSUMER_GROUP, id="0", mkstream=True)
    add_events(r, count, tag, shards=shards)


def raw_redis_limit(r: redis.Redis, count: int, batch: int) -> float:
    """XREADGROUP + XACK/XDEL with no HTTP: the ceiling for a Python consumer."""
    preload(r, count, "raw")
    done = 0
    started = time.perf_counter()
    while done < count:
        reply: Any = r.xreadgroup(CONSUMER_GROUP, "raw", {STREAM: ">"}, count=batch)
        if not reply:
            break
        ids = [i for i, _ in reply[0][1]]
        pipe = r.pipeline(transaction=True)
        pipe.xack(STREAM, CONSUMER_GROUP, *ids)
        pipe.xdel(STREAM, *ids)
        pipe.execute()
        done += len(ids)
    return done / (time.perf_counter() - started)


def accepted(sim_url: str) -> int:
    with urllib.request.urlopen(f"{sim_url}/admin/state", timeout=5) as resp:
        return int(json.loads(resp.read())["accepted"])


def through_forwarders(
    r: redis.Redis,
    sim_url: str,
    redis_url: str,
    processes: int,
    count: int,
    batch: int,
    work: Path,
    shards: int = 1,
) -> float:
    base = accepted(sim_url)  # counted before this run (a sink serves several)
    preload(r, count, f"p{processes}-{base}-", shards)
    env = {
        "TRACKRELAY_REDIS_URL": redis_url,
        "TRACKRELAY_ANALYTICS_URL": sim_url,
        "TRACKRELAY_BATCH_SIZE": str(batch),
    }
    procs = [
        spawn_role(["forwarder", "--consumer-name", f"bench{i}"], env, work / "forwarder.log")
        for i in range(processes)
    ]
    try:
        # Time the middle 90% of the run, so process start-up does not count.
        lo, hi = int(count * 0.05), int(count * 0.95)
        deadline = time.monotonic() + 600
        t0 = t1 = 0.0
        while time.monotonic() < deadline:
            n = accepted(sim_url) - base
            now = time.perf_counter()
            if not t0 and n >= lo:
                t0, n0 = now, n
            if n >= hi:
                t1, n1 = now, n
                break
            time.sleep(0.02)
        if not t1:
            raise RuntimeError("forwarders did not finish within 600 s")
        return (n1 - n0) / (t1 - t0)
    finally:
        stop_all(procs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--batch-size", type=int, default=500)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="trackrelay-bench-"))
    server = EmbeddedRedis(work / "redis", appendonly=False).start()
    sim_port = free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    sim = spawn_role(["analytics-sim", "--port", str(sim_port)], {}, work / "sim.log")
    null_port = free_port()
    null_url = f"http://127.0.0.1:{null_port}"
    null = subprocess.Popen(
        [sys.executable, str(REPO / "benchmarks" / "null_sink.py"), str(null_port)]
    )
    rows: list[dict[str, Any]] = []
    try:
        wait_http(f"{sim_url}/healthz", 30, sim)
        wait_http(f"{null_url}/admin/state", 30, null)
        r = redis.Redis.from_url(server.url)
        raw = raw_redis_limit(r, args.events, args.batch_size)
        rows.append(
            {
                "path": "raw Redis (XREADGROUP+XACK/XDEL, no HTTP)",
                "processes": 1,
                "events_per_s": round(raw),
            }
        )
        print(f"  raw redis: {raw:,.0f} events/s", flush=True)
        for way, url in ((SIMULATOR, sim_url), (NULL_SINK, null_url)):
            for processes in (1, 2):
                rate = through_forwarders(
                    r, url, server.url, processes, args.events, args.batch_size, work
                )
                rows.append({"path": way, "processes": processes, "events_per_s": round(rate)})
                print(f"  {way}, {processes} process(es): {rate:,.0f} events/s", flush=True)
    finally:
        stop_all([sim, null])
        server.stop()

    def single(path: str) -> int:
        return next(
            int(r["events_per_s"]) for r in rows if r["processes"] == 1 and r["path"] == path
        )

    one, alone = single(SIMULATOR), single(NULL_SINK)
    print()
    print(
        table(
            f"Forwarder throughput, {args.events:,} events, batch {args.batch_size}",
            ["path", "processes", "events/s"],
            [[r["path"], r["processes"], r["events_per_s"]] for r in rows],
        )
    )
    ratio = one / raw
    print(
        f"\none forwarder: {one:,} events/s (target >= 50,000), "
        f"{ratio:.2f} of the raw Redis consumer loop ({raw:,.0f} events/s); the ownership "
        "guarantees are in place (deadline-guarded pushes, checked refreshes on retries)"
    )
    print(
        f"to a sink that only counts: {alone:,} events/s, {alone / raw:.2f} of raw "
        "(the simulator's own CPU shares the two cores)"
    )
    path = write_json(
        "forwarder",
        {
            "args": vars(args),
            "results": rows,
            "targets": {
                "one_forwarder_events_per_s": one,
                "target_min": 50_000,
                "over_raw_redis": round(ratio, 3),
                "null_sink_over_raw_redis": round(alone / raw, 3),
            },
        },
    )
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
