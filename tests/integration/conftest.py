"""Helpers for the integration suites: bulk orders, stream reads, relay processes."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from trackrelay.constants import EVENT_FIELD, STREAM
from trackrelay.events import Event
from trackrelay.orders import store
from trackrelay.orders.models import OrderRequest


async def insert_orders(
    engine: AsyncEngine, count: int, lines: int = 2, concurrency: int = 16
) -> set[str]:
    """Store ``count`` orders of ``lines`` lines; returns every event id they produced."""
    ids: set[str] = set()
    sem = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        req = OrderRequest.model_validate(
            {
                "customer_id": f"c{n}",
                "items": [
                    {"sku": f"sku-{(n + k) % 50}", "qty": 1 + k, "price": 100} for k in range(lines)
                ],
            }
        )
        async with sem:
            result = await store.create_order(engine, req, None)
        ids.update(f"{result.order.order_id}:{k}" for k in range(lines))

    await asyncio.gather(*(one(n) for n in range(count)))
    return ids


async def stream_event_ids(redis: Redis) -> list[str]:
    """Every event id in the stream, in stream order (duplicates kept)."""
    out: list[str] = []
    last = "-"
    while True:
        batch: Any = await redis.xrange(STREAM, min=last, count=5000)
        if last != "-":
            batch = batch[1:]
        if not batch:
            return out
        out.extend(Event.from_json(fields[EVENT_FIELD.encode()]).event_id for _, fields in batch)
        last = batch[-1][0].decode()


async def wait_until_drained(engine: AsyncEngine, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (stats := await store.outbox_stats(engine)).depth:
        if loop.time() > deadline:
            raise AssertionError(f"outbox still holds {stats.depth} rows after {timeout}s")
        await asyncio.sleep(0.1)


def poll_until(cond: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    """Whether ``cond`` became true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return bool(cond())


def wait_for(cond: Callable[[], bool], timeout: float, what: str) -> None:
    """Fail the test unless ``cond`` becomes true within ``timeout`` seconds."""
    if not poll_until(cond, timeout, every=0.05):
        raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``trackrelay ARGS`` to completion, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "trackrelay.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
