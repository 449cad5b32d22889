"""What ``trackrelay up --load`` adds: synthetic shoppers and a status line.

The load posts orders to our own API at a steady rate, with SKUs drawn from a
skewed (Zipf-like) popularity so the analytics top list means something; the
status line shows orders, outbox, stream, pending and what analytics counted.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import random
import time
from typing import Any

import httpx

from trackrelay.control.percentile import percentile
from trackrelay.queue import client as queue_client
from trackrelay.queue import shards, streams, views
from trackrelay.queue.client import Queue
from trackrelay.queue.keys import RELAY_STATS_PREFIX

log = logging.getLogger(__name__)

SKUS = [f"sku-{n:03d}" for n in range(1, 51)]
_WEIGHTS = [1.0 / rank for rank in range(1, len(SKUS) + 1)]


def random_order(rng: random.Random, customer: int) -> dict[str, Any]:
    lines = rng.randint(1, 3)
    skus = rng.choices(SKUS, weights=_WEIGHTS, k=lines)
    return {
        "customer_id": f"shopper-{customer}",
        "items": [
            {"sku": s, "qty": rng.randint(1, 3), "price": rng.randint(100, 9999)} for s in skus
        ],
    }


class Shoppers:
    """Post ``rate`` orders per second to ``api``; keeps the ids of accepted orders.

    ``rate`` may be changed while running (the demo's phases). Each answer's
    latency is kept with its time, for orders/s and p99 over recent seconds.
    """

    def __init__(self, api: str, rate: float, seed: int = 1, lanes: int = 4) -> None:
        self.api = api.rstrip("/") + "/v1/orders"
        self.rate = rate
        self.rng = random.Random(seed)
        self.lanes = lanes
        self.accepted = 0
        self.refused = 0
        self.ids: list[str] = []
        self.answers: collections.deque[tuple[float, float]] = collections.deque(maxlen=100_000)
        """(time.monotonic() at the answer, seconds it took) of accepted orders."""
        self._n = 0

    async def run(self, stop: asyncio.Event) -> None:
        """Send until ``stop``; ``lanes`` requests may be in flight, so one slow answer
        does not hold the rate down (an open-loop load, as shoppers are)."""
        loop = asyncio.get_running_loop()
        limits = httpx.Limits(max_connections=self.lanes)
        async with httpx.AsyncClient(timeout=10, limits=limits) as client:
            lanes = asyncio.Semaphore(self.lanes)
            pending: set[asyncio.Task[None]] = set()
            next_at = loop.time()
            while not stop.is_set():
                await lanes.acquire()
                task = asyncio.create_task(self._one(client, lanes))
                pending.add(task)
                task.add_done_callback(pending.discard)
                next_at += 1.0 / max(self.rate, 0.1)
                delay = next_at - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)
                else:
                    next_at = loop.time()  # behind: do not burst to catch up
            if pending:
                await asyncio.gather(*pending, return_exceptions=True)

    async def _one(self, client: httpx.AsyncClient, lanes: asyncio.Semaphore) -> None:
        self._n += 1
        body = random_order(self.rng, self._n)
        started = time.monotonic()
        try:
            r = await client.post(self.api, json=body)
            if r.status_code in (200, 201):
                self.accepted += 1
                self.ids.append(r.json()["order_id"])
                self.answers.append((time.monotonic(), time.monotonic() - started))
            else:
                self.refused += 1
        except (httpx.HTTPError, ValueError, KeyError):
            self.refused += 1
        finally:
            lanes.release()

    def recent(self, seconds: float = 5.0) -> tuple[float, float | None]:
        """Accepted orders/s and their p99 answer time (seconds) over the last ``seconds``."""
        since = time.monotonic() - seconds
        latencies = sorted(lat for at, lat in self.answers if at >= since)
        return len(latencies) / seconds, percentile(latencies, 0.99)


HEALTH_WORDS = {True: "healthy", False: "unhealthy", None: "unknown"}
"""The controller's verdict on analytics (``Health.healthy``) in status lines and views."""


def human_size(n: float) -> str:
    """Bytes as B, KiB or MiB with one decimal."""
    for unit in ("B", "KiB", "MiB"):
        if abs(n) < 1024 or unit == "MiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} GiB"


def shedding_parts(relays: dict[str, dict[str, Any]]) -> list[str]:
    """The status line's shedding part: policy, queue memory against quota, shed counts."""
    parts = []
    for view in relays.values():
        if "queue_quota" in view:
            share = view["queue_bytes"] / view["queue_quota"]
            policy = view["policy"] + (f" p={view['p']:.2f}" if view["policy"] == "sample" else "")
            parts.append(
                f"queue {human_size(view['queue_bytes'])}/{human_size(view['queue_quota'])} "
                f"({share:.0%}) shedding {policy}"
            )
        if "outbox_quota" in view:
            parts.append(
                f"outbox {view['outbox_rows']}/{view['outbox_quota']} rows"
                f" ({view['outbox_policy']})"
            )
        shed = view.get("shed", {})
        if shed:
            parts.append("shed " + ", ".join(f"{k} {v}" for k, v in sorted(shed.items())))
    return parts


async def status_line(
    redis: Queue, shoppers: Shoppers | None, analytics_url: str | None, client: httpx.AsyncClient
) -> str:
    stats = await streams.queue_stats(redis, await shards.current(redis))
    parts = []
    if shoppers is not None:
        parts.append(f"orders accepted {shoppers.accepted} (refused {shoppers.refused})")
    parts.append(f"stream {stats.length} pending {stats.pending} dlq {stats.dlq}")
    parts.extend(shedding_parts(await views.read_stats(redis, RELAY_STATS_PREFIX)))
    if analytics_url is not None:
        try:
            state = (await client.get(f"{analytics_url}/admin/state")).json()
            top = (await client.get(f"{analytics_url}/v1/popularity", params={"top": 3})).json()[
                "top"
            ]
            best = ", ".join(f"{t['sku']}={t['qty']:.0f}" for t in top)
            parts.append(f"analytics {state['mode']}: {state['accepted']} events, top {best}")
        except (httpx.HTTPError, ValueError, KeyError):
            parts.append("analytics: no state")
    return " | ".join(parts)


async def report(
    redis_url: str,
    shoppers: Shoppers | None,
    analytics_url: str | None,
    stop: asyncio.Event,
    every: float = 5.0,
) -> None:
    redis = queue_client.connect(redis_url)
    async with httpx.AsyncClient(timeout=2) as client:
        try:
            while not stop.is_set():
                try:
                    await asyncio.wait_for(stop.wait(), timeout=every)
                    break
                except TimeoutError:
                    pass
                try:
                    print(
                        "trackrelay up:",
                        await status_line(redis, shoppers, analytics_url, client),
                        flush=True,
                    )
                except Exception as exc:  # status must never take the stack down
                    log.warning("status line failed: %s", exc)
        finally:
            await redis.aclose()
