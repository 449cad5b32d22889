"""Relay throughput: committed outbox rows to stream entries, per process, beside the raw loop.

A pre-filled outbox on durable PostgreSQL (fsync on, synchronous commit) drains into
the queue's Redis (AOF, `appendfsync always`, as the chart runs it), four ways in one
run, each on a fresh outbox of the same events and a fresh Redis:

- **raw**: the least a safe move can do, in this process: one transaction a batch that
  deletes the oldest rows (``FOR UPDATE SKIP LOCKED ... RETURNING``), XADDs them in one
  pipeline and commits only once Redis has them (asyncpg and redis-py, no SQLAlchemy);
- **relay x1**: one ``trackrelay relay`` process (claim under a lease, XADD, delete:
  two transactions and a pipeline a batch, so that a stalled relay never deletes rows
  another took over);
- **relay x2**: two ``trackrelay relay`` processes sharing the outbox;
- **relay x1, WAIT 1**: one relay whose every batch waits for a replica of the queue's
  Redis (``--queue-replicas 1``: a marker write and ``WAIT``) before its rows are
  deleted: what a failover that loses nothing costs.

    .venv/bin/python benchmarks/relay.py [--events 100000] [--batch-size 500] [--rounds 3]

Prints a table and writes benchmarks/results/relay.json.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import asyncpg
from tests.support.postgres import PostgresCluster

from benchmarks.harness import drained, table, write_json
from trackrelay.config.settings import resolve_database_url
from trackrelay.db import engine as database
from trackrelay.db import migrate
from trackrelay.db.engine import asyncpg_dsn
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.orders import store
from trackrelay.orders.models import OrderRequest
from trackrelay.queue import streams
from trackrelay.queue.client import connect
from trackrelay.queue.keys import SHARD0, STREAM

LINES = 5
"""Lines an order (each an event): filling goes five times faster than one a line."""
TRACKRELAY = str(Path(sys.executable).parent / "trackrelay")


async def fill(url: str, events: int, lines: int = LINES) -> None:
    """Orders of ``lines`` lines each, ``events`` lines in all, through the order path's
    own insert: the outbox holds what a shop's orders put there."""
    engine = database.make_engine(url)
    sem = asyncio.Semaphore(32)

    async def one(n: int) -> None:
        items = [{"sku": f"sku-{(n + j) % 100}", "qty": 1, "price": 1} for j in range(lines)]
        req = OrderRequest.model_validate({"customer_id": f"c{n}", "items": items})
        async with sem:
            await store.create_order(engine, req, None)

    await asyncio.gather(*(one(n) for n in range(events // lines)))
    await engine.dispose()


def filled_database(pg: PostgresCluster, work: Path, events: int, lines: int = LINES) -> str:
    """A fresh database on ``pg``, migrated, its outbox holding ``events`` lines' events."""
    url = resolve_database_url(pg.create_database(), work)
    migrate.upgrade(url)
    asyncio.run(fill(url, events, lines))
    return url


async def watch(dsn: str, procs: list[subprocess.Popen[bytes]], events: int) -> float:
    """Seconds from the first row gone to the last, read on one connection every 50 ms
    (a connection a look would cost PostgreSQL a backend each, beside the relays)."""
    conn = await asyncpg.connect(dsn)
    try:
        started = None
        while True:
            left = int(await conn.fetchval("SELECT count(*) FROM outbox"))
            now = time.perf_counter()
            if started is None and left < events:
                started = now  # the first batch has gone: the relays are running
            if left == 0:
                assert started is not None
                return now - started
            for p in procs:
                if p.poll() is not None:
                    said = p.stderr.read().decode() if p.stderr else ""
                    raise SystemExit(f"a relay exited: {said}")
            await asyncio.sleep(0.05)
    finally:
        await conn.close()


async def raw_drain(dsn: str, redis_url: str, batch: int) -> None:
    conn = await asyncpg.connect(dsn)
    redis = connect(redis_url)
    take = (
        "DELETE FROM outbox WHERE id IN (SELECT id FROM outbox ORDER BY id LIMIT $1"
        " FOR UPDATE SKIP LOCKED) RETURNING id, payload"
    )
    try:
        while True:
            async with conn.transaction():
                rows = await conn.fetch(take, batch)
                if not rows:
                    return
                rows.sort(key=lambda r: r["id"])
                results = await streams.publish(redis, SHARD0, [r["payload"] for r in rows])
                failed = [r for r in results if isinstance(r, Exception)]
                if failed:
                    raise failed[0]  # the transaction rolls back: the rows stay
    finally:
        await redis.aclose()
        await conn.close()


def relays_drain(
    url: str,
    redis_url: str,
    batch: int,
    n: int,
    events: int,
    dsn: str,
    shards: int = 1,
    replicas: int = 0,
) -> float:
    """Seconds ``n`` relay processes take to empty the outbox (from their first row) into a
    queue of ``shards``, each batch waiting for ``replicas``."""
    argv = [TRACKRELAY, "relay", "--database-url", url, "--redis-url", redis_url, "--no-migrate"]
    argv += ["--relay-batch-size", str(batch), "--queue-shards", str(shards)]
    argv += ["--queue-replicas", str(replicas)]
    env = {**os.environ, "TRACKRELAY_LOG_LEVEL": "WARNING"}
    procs = [
        subprocess.Popen([*argv, "--owner", f"bench-{i}"], env=env, stderr=subprocess.PIPE)
        for i in range(n)
    ]
    try:
        return asyncio.run(watch(dsn, procs, events))
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def stream_length(redis_url: str) -> int:
    async def length() -> int:
        redis = connect(redis_url)
        try:
            return int(await redis.xlen(STREAM))
        finally:
            await redis.aclose()

    return asyncio.run(length())


WITH_REPLICA = "relay x1, WAIT 1"
"""One relay whose batches each wait for a replica (``--queue-replicas 1``)."""
WAYS = ("raw", "relay x1", "relay x2", WITH_REPLICA)


def run(events: int, batch: int, work: Path) -> list[dict[str, Any]]:
    pg = PostgresCluster(work / "pg", durable=True).start()
    rows = []
    try:
        for way in WAYS:
            url = filled_database(pg, work, events)
            dsn = asyncpg_dsn(url)
            name = way.replace(" ", "").replace(",", "")
            with EmbeddedRedis(work / f"redis-{name}", appendfsync="always") as server:
                replica = None
                if way == WITH_REPLICA:  # the same primary, and a replica to wait for
                    replica = EmbeddedRedis(
                        work / f"replica-{name}",
                        appendfsync="always",
                        extra=["--replicaof", "127.0.0.1", str(server.port)],
                    ).start()
                try:
                    if way == "raw":
                        started = time.perf_counter()
                        asyncio.run(raw_drain(dsn, server.url, batch))
                        seconds = time.perf_counter() - started
                    else:
                        n = 2 if way == "relay x2" else 1
                        waits = 1 if replica is not None else 0
                        seconds = relays_drain(url, server.url, batch, n, events, dsn, 1, waits)
                    moved = stream_length(server.url)
                finally:
                    if replica is not None:
                        replica.stop()
            if moved != events:
                raise SystemExit(f"{way}: {moved} stream entries for {events} events")
            rows.append(drained(events, seconds, way=way))
    finally:
        pg.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--batch-size", type=int, default=500)
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (the median)")
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    for n in range(args.rounds):
        print(f"round {n + 1} of {args.rounds}", flush=True)
        with tempfile.TemporaryDirectory() as tmp:
            rows += [r | {"round": n + 1} for r in run(args.events, args.batch_size, Path(tmp))]
    ways = list(dict.fromkeys(r["way"] for r in rows))
    by = {w: statistics.median(r["events_per_s"] for r in rows if r["way"] == w) for w in ways}
    per_round = {w: [r["events_per_s"] for r in rows if r["way"] == w] for w in ways}
    print(
        table(
            f"relay throughput, pre-filled outbox on durable PostgreSQL to Redis with"
            f" appendfsync always (batches of {args.batch_size}, {args.events} events,"
            f" median of {args.rounds} rounds)",
            ["way", "events/s", "of raw", "rounds"],
            [
                [w, round(by[w]), f"{by[w] / by['raw']:.2f}", " ".join(map(str, per_round[w]))]
                for w in ways
            ],
        )
    )
    scaling = by["relay x2"] / by["relay x1"]
    waiting = by[WITH_REPLICA] / by["relay x1"]
    print(
        f"two relays / one: {scaling:.2f} (target 1.6);"
        f" one relay: {round(by['relay x1'])} ev/s (target 20000);"
        f" waiting for a replica: {waiting:.2f} of one relay"
    )
    path = write_json(
        "relay",
        {
            "batch_size": args.batch_size,
            "rows": rows,
            "median_events_per_s": by,
            "two_over_one": round(scaling, 3),
            "replica_wait_over_one": round(waiting, 3),
        },
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
