"""What ``trackrelay up --load`` adds: synthetic shoppers and a status line.

The load posts orders to our own API at a steady rate, with SKUs drawn from a
skewed (Zipf-like) popularity so the analytics top list means something; the
status line shows orders, outbox, stream, pending and what analytics counted.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Any

import httpx
from redis.asyncio import Redis

from trackrelay import budget, streams
from trackrelay.constants import RELAY_STATS_PREFIX

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
    """Post ``rate`` orders per second to ``api``; counts what was accepted."""

    def __init__(self, api: str, rate: float, seed: int = 1) -> None:
        self.api = api.rstrip("/") + "/v1/orders"
        self.rate = rate
        self.rng = random.Random(seed)
        self.accepted = 0
        self.refused = 0

    async def run(self, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        async with httpx.AsyncClient(timeout=5) as client:
            n = 0
            started = loop.time()
            while not stop.is_set():
                n += 1
                try:
                    r = await client.post(self.api, json=random_order(self.rng, n))
                    if r.status_code in (200, 201):
                        self.accepted += 1
                    else:
                        self.refused += 1
                except httpx.HTTPError:
                    self.refused += 1
                delay = started + n / self.rate - loop.time()
                if delay > 0:
                    with contextlib.suppress(TimeoutError):
                        await asyncio.wait_for(stop.wait(), timeout=delay)


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
    redis: Redis, shoppers: Shoppers | None, analytics_url: str | None, client: httpx.AsyncClient
) -> str:
    stats = await streams.queue_stats(redis)
    parts = []
    if shoppers is not None:
        parts.append(f"orders accepted {shoppers.accepted} (refused {shoppers.refused})")
    parts.append(f"stream {stats.length} pending {stats.pending} dlq {stats.dlq}")
    parts.extend(shedding_parts(await budget.read_stats(redis, RELAY_STATS_PREFIX)))
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
    redis = Redis.from_url(redis_url)
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
