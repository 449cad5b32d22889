"""Freshness under load: seconds from an order's commit to its events at analytics.

The path users run: ``trackrelay up`` (order service with its relay, forwarders, the
controller) on durable PostgreSQL (and on its embedded SQLite default), pushing to the
simulator at far more capacity than the load needs. wrk posts orders at a steady
rate (each connection waits between requests, so the rate is the load's, not the
service's limit). The simulator times every new event from its ``occurred_at`` (the
order's moment) to its count; the time from the same
moment to the stream is read from the stream itself (``StreamWatch``).

Each rate runs twice, interleaved: with the relay woken by each commit
(``--relay-wakeups``) and without, the relay finding rows by polling every 50 ms (the
default, and the baseline).

    .venv/bin/python benchmarks/freshness.py [--seconds 15]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis
from tests.support.postgres import PostgresCluster

from benchmarks.harness import http, table, write_json, wrk
from trackrelay.control.percentile import percentile
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.queue.keys import EVENT_FIELD, STREAM
from trackrelay.runtime.ports import free_port

CASES = (("sqlite", 100), ("postgresql", 100), ("postgresql", 500), ("postgresql", 1000))
"""(store, orders/s): the issue's rates."""
CONNECTIONS = 20
"""wrk connections; each waits ``CONNECTIONS / rate`` seconds between its requests."""
SIM_RATE = 100_000
"""Events/s the simulator takes: far above any load here, so analytics never limits."""
ORDER = (
    '{"customer_id":"bench","items":[{"sku":"sku-1","qty":1,"price":500},'
    '{"sku":"sku-2","qty":2,"price":250}]}'
)
"""Two lines: two events an order."""
WARM = 10.0
"""Seconds of load before the measured window: pools warm, the controller's budget
raised from its start (1,000 events/s) to what the load needs."""


def steady_wrk(url: str, rate: float, seconds: float) -> dict[str, float]:
    """wrk at about ``rate`` requests/s: orders/s measured and their p99 (ms)."""
    delay_ms = max(0.1, CONNECTIONS * 1000.0 / rate - 2.0)  # less a typical answer's time
    got = wrk(url, ORDER, seconds, CONNECTIONS, delay_ms=delay_ms)
    return {"orders_per_s": got["requests_per_s"], "order_p99_ms": got["p99_ms"]}


class StreamWatch(threading.Thread):
    """Reads the stream as entries arrive (XREAD BLOCK, no consumer group: the
    forwarders' reads are untouched) and times each from its event's ``occurred_at`` to
    the XADD, whose time is the entry id's first part (Redis' clock, ms). An entry
    forwarders delete before this reader sees it is left out: a sample, not a count."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.done = threading.Event()
        self.delays: list[tuple[float, float]] = []
        """(XADD time, seconds from occurred_at to it)."""

    def run(self) -> None:
        with redis.Redis.from_url(self.url) as r:
            last = "$"
            while not self.done.is_set():
                got: Any = r.xread({STREAM: last}, count=2000, block=200)
                for _, entries in got or []:
                    for entry_id, fields in entries:
                        last = entry_id
                        added = int(entry_id.split(b"-")[0]) / 1000
                        event = json.loads(fields[EVENT_FIELD.encode()])
                        moment = datetime.fromisoformat(event["occurred_at"]).timestamp()
                        self.delays.append((added, added - moment))

    def between(self, start: float, end: float) -> list[float]:
        return sorted(d for at, d in self.delays if start <= at <= end)


def queue_url(data_dir: Path, timeout: float = 60) -> str:
    """The queue Redis ``up`` started, from its status file."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(FileNotFoundError, ValueError):
            found = json.loads((data_dir / "status.json").read_text()).get("queue")
            if found:
                return str(found)
        time.sleep(0.2)
    raise SystemExit(f"up wrote no queue URL to {data_dir}/status.json in {timeout:g} s")


def one(
    store: str, rate: int, wakeups: bool, seconds: float, pg: PostgresCluster, work: Path
) -> dict[str, Any]:
    name = f"{store}-{rate}-{'wake' if wakeups else 'poll'}"
    here = work / name
    here.mkdir(parents=True)
    sim_port, api_port = free_port(), free_port()
    sim_url, api = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{api_port}"
    sim = spawn_role(
        ["analytics-sim", "--port", str(sim_port), "--rate", str(SIM_RATE)], {}, here / "sim.log"
    )
    args = ["up", "--analytics-url", sim_url, "--data-dir", str(here / "up")]
    args += ["--port", str(api_port)]
    if store == "postgresql":
        args += ["--database-url", pg.create_database()]
    if not wakeups:
        args.append("--no-relay-wakeups")
    up = spawn_role(args, {}, here / "up.log")
    try:
        wait_http(sim_url + "/healthz", 30, sim)
        wait_http(api + "/readyz", 90, up)
        watch = StreamWatch(queue_url(here / "up"))
        watch.start()
        steady_wrk(api + "/v1/orders", rate, WARM)
        started = time.time()
        load = steady_wrk(api + "/v1/orders", rate, seconds)
        ended = time.time()
        time.sleep(2.0)  # the window's last events reach analytics
        timeline = http(f"{sim_url}/admin/timeline?since={int(started)}&raw=true")["seconds"]
        fresh = sorted(
            a for s in timeline if int(started) < s["t"] < int(ended) for a in s["freshness"]
        )
        watch.done.set()
        stream = watch.between(started + 1, ended - 1)
    finally:
        stop_all([up], 30.0)
        stop_all([sim], 10.0)
    row: dict[str, Any] = {
        "store": store,
        "target": rate,
        "relay": "woken by commits" if wakeups else "polls every 50 ms",
        "orders_per_s": round(load["orders_per_s"]),
        "order_p99_ms": round(load["order_p99_ms"], 1),
        "stream_p50_ms": round(1000 * (percentile(stream, 0.5) or math.nan), 1),
        "stream_p99_ms": round(1000 * (percentile(stream, 0.99) or math.nan), 1),
        "events": len(fresh),
        "fresh_p50_ms": round(1000 * (percentile(fresh, 0.5) or math.nan), 1),
        "fresh_p99_ms": round(1000 * (percentile(fresh, 0.99) or math.nan), 1),
    }
    print(f"  {name}: {row}", flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=15.0, help="measured load per case")
    parser.add_argument(
        "--case", action="append", default=[], help="store:rate to run (default: the four)"
    )
    args = parser.parse_args()
    cases = [(c.split(":")[0], int(c.split(":")[1])) for c in args.case] or list(CASES)
    rows = []
    with tempfile.TemporaryDirectory(prefix="trackrelay-fresh-") as tmp:
        work = Path(tmp)
        pg = PostgresCluster(work / "pg", durable=True).start()
        try:
            for store, rate in cases:
                for wakeups in (True, False):
                    rows.append(one(store, rate, wakeups, args.seconds, pg, work))
        finally:
            pg.stop()
    columns = (
        "store",
        "target",
        "relay",
        "orders_per_s",
        "order_p99_ms",
        "stream_p50_ms",
        "stream_p99_ms",
        "events",
        "fresh_p50_ms",
        "fresh_p99_ms",
    )
    print()
    title = "order -> stream (XADD time) and order -> analytics (the simulator's count)"
    print(table(title, columns, [[r[c] for c in columns] for r in rows]))
    print(f"\nresults: {write_json('freshness', {'rows': rows})}")


if __name__ == "__main__":
    main()
