"""What the queue Redis' `appendfsync always` costs the relay, next to `everysec`.

The relay deletes an outbox row only once Redis acknowledged its entry; with
`appendfsync always` that acknowledgment means the entry is on disk, so a node crash
loses no event whose row is gone. This measures the price on the path the chart
runs: PostgreSQL with its durable defaults, the relay moving rows in batches, the
queue's Redis with AOF, one fsync policy, then the other, in one run.

    .venv/bin/python benchmarks/relay_fsync.py [--orders 20000] [--batch-size 500]

Prints a table and writes benchmarks/results/relay_fsync.json.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.support.postgres import PostgresCluster

from benchmarks.harness import drained, table, write_json
from benchmarks.relay import filled_database
from trackrelay.config.settings import OrderSettings
from trackrelay.db import engine as database
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.queue.client import connect
from trackrelay.relay import outbox
from trackrelay.relay.relay import OutboxRelay

POLICIES = ("always", "everysec")


async def drain(url: str, redis_url: str, batch: int) -> float:
    """Seconds the relay takes to move the whole outbox into the stream."""
    engine = database.make_engine(url)
    redis = connect(redis_url)
    relay = OutboxRelay(engine, redis, OrderSettings(relay_batch_size=batch), owner="bench")
    stop = asyncio.Event()
    started = time.perf_counter()
    task = asyncio.create_task(relay.run(stop))
    while (await outbox.outbox_stats(engine)).depth:  # noqa: ASYNC110 (polls the database)
        await asyncio.sleep(0.01)
    took = time.perf_counter() - started
    stop.set()
    await task
    await redis.aclose()
    await engine.dispose()
    return took


def run(orders: int, batch: int, work: Path) -> list[dict[str, Any]]:
    pg = PostgresCluster(work / "pg", durable=True).start()
    rows = []
    try:
        for policy in POLICIES:
            url = filled_database(pg, work, orders, lines=1)
            with EmbeddedRedis(work / f"redis-{policy}", appendfsync=policy) as server:
                seconds = asyncio.run(drain(url, server.url, batch))
            rows.append(drained(orders, seconds, appendfsync=policy))
    finally:
        pg.stop()
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--orders", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = run(args.orders, args.batch_size, Path(tmp))
    always, everysec = (r["events_per_s"] for r in rows)
    print(
        table(
            f"relay throughput by the queue Redis' fsync policy (batches of {args.batch_size})",
            ["appendfsync", "events", "seconds", "events/s"],
            [[r["appendfsync"], r["events"], r["seconds"], r["events_per_s"]] for r in rows],
        )
    )
    print(f"always / everysec: {always / everysec:.2f}")
    path = write_json(
        "relay_fsync",
        {"batch_size": args.batch_size, "rows": rows, "ratio": round(always / everysec, 3)},
    )
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
