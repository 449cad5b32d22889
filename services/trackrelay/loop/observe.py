"""What the controller observes, read from Redis (and an analytics health probe).

Shared by local mode and the operator: the stream's backlog (entries are
deleted once acknowledged, so its length is lag plus pending), the queue's
memory as the quota counts it, and each forwarder's published view.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from trackrelay.control.controller import ForwarderView, Observation
from trackrelay.control.push_outcome import Outcome
from trackrelay.queue import streams, views
from trackrelay.queue.client import Queue
from trackrelay.queue.quota import exact_usage

_FAILED = (Outcome.FAILED.value, Outcome.EXPIRED.value)


def forwarder_view(name: str, stats: dict[str, Any]) -> ForwarderView:
    """One forwarder's published statistics as the controller reads them (its recent window)."""
    recent = stats.get("recent") or stats
    outcomes = recent.get("outcomes") or {}
    p99, p50 = recent.get("latency_p99"), recent.get("latency_p50")
    return ForwarderView(
        name=name,
        pushes=int(recent.get("pushes", 0)),
        latency_p99=None if p99 is None else float(p99),
        errors=sum(int(outcomes.get(k, 0)) for k in _FAILED),
        throttled=int(outcomes.get(Outcome.OVERLOADED.value, 0)),
        breaker=str(stats.get("breaker", "closed")),
        events_per_second=float(recent.get("events_per_second", 0.0)),
        window=float(stats.get("limit_events") or 0.0),
        latency_p50=None if p50 is None else float(p50),
    )


async def probe(client: httpx.AsyncClient, url: str) -> bool:
    """The analytics health URL answers 2xx within the client's timeout."""
    try:
        return (await client.get(url)).is_success
    except httpx.HTTPError:
        return False


async def observe(
    redis: Queue,
    queue_quota: int | None,
    health_url: str | None = None,
    client: httpx.AsyncClient | None = None,
) -> Observation:
    """One observation; raises ``RedisError``/``OSError`` when Redis cannot be read."""
    stats = await streams.queue_stats(redis)
    published = await views.read_stats(redis)
    used = await exact_usage(redis) if queue_quota else None
    probe_ok = None
    if health_url is not None and client is not None:
        probe_ok = await probe(client, health_url)
    return Observation(
        at=time.time(),
        lag=max(0, stats.length - stats.pending),
        pending=stats.pending,
        forwarders=tuple(forwarder_view(n, v) for n, v in sorted(published.items())),
        queue_bytes=used,
        queue_quota=queue_quota,
        probe_ok=probe_ok,
    )
