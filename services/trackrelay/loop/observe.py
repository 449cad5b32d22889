"""What the controller observes, read from Redis (and analytics' probe and metrics).

Shared by local mode and the operator: the stream's backlog (entries are
deleted once acknowledged, so its length is lag plus pending), the queue's
memory as the quota counts it, each forwarder's published view, the analytics
health probe's answer when a URL is given, and the verdict of analytics' own
metrics when a ``PrometheusSpec`` is given (``loop.prometheus``).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

import httpx

from trackrelay.control.analytics_health import PrometheusSpec, Verdict
from trackrelay.control.controller import ForwarderView, Observation
from trackrelay.control.push_outcome import Outcome
from trackrelay.events import ForwarderStats
from trackrelay.loop import prometheus as metrics
from trackrelay.queue import shards, streams, views
from trackrelay.queue.client import Queue
from trackrelay.queue.keys import RELAY_STATS_PREFIX
from trackrelay.queue.quota import pressure_usage

_FAILED = (Outcome.FAILED.value, Outcome.EXPIRED.value)

log = logging.getLogger(__name__)


def forwarder_view(name: str, stats: ForwarderStats) -> ForwarderView:
    """One forwarder's published statistics as the controller reads them (its recent span)."""
    recent = stats.recent
    return ForwarderView(
        name=name,
        pushes=recent.pushes,
        latency_p99=recent.latency_p99,
        errors=sum(recent.outcomes.get(k, 0) for k in _FAILED),
        throttled=recent.outcomes.get(Outcome.OVERLOADED.value, 0),
        breaker=stats.breaker,
        events_per_second=recent.events_per_second,
        limit=stats.limit_events,
        latency_p50=recent.latency_p50,
        at=stats.at,
        totals=stats.totals,
        span=recent.span_seconds,
    )


_REFUSED: set[tuple[str, str]] = set()
"""(forwarder, error) pairs already logged: one line per bad view, not one per tick."""


def forwarder_views(published: dict[str, dict[str, Any]]) -> tuple[ForwarderView, ...]:
    """The views of every forwarder whose statistics parse; another shape is logged (once)
    and left out, never guessed at."""
    out = []
    for name, raw in sorted(published.items()):
        try:
            out.append(forwarder_view(name, ForwarderStats.from_json(raw)))
        except ValueError as exc:
            if (name, str(exc)) not in _REFUSED and len(_REFUSED) < 1000:
                _REFUSED.add((name, str(exc)))
                log.warning("controller: forwarder %s: %s", name, exc)
    return tuple(out)


async def probe(client: httpx.AsyncClient, url: str) -> bool:
    """The analytics health URL answers 2xx within the client's timeout."""
    try:
        return (await client.get(url)).is_success
    except httpx.HTTPError:
        return False


async def _probe(client: httpx.AsyncClient | None, url: str | None) -> bool | None:
    return None if url is None or client is None else await probe(client, url)


async def _verdict(client: httpx.AsyncClient | None, spec: PrometheusSpec | None) -> Verdict | None:
    if spec is None:
        return None
    if client is not None:
        return await metrics.check(client, spec)
    async with httpx.AsyncClient() as own:
        return await metrics.check(own, spec)


async def observe(
    redis: Queue,
    queue_quota: int | None,
    health_url: str | None = None,
    client: httpx.AsyncClient | None = None,
    prometheus: PrometheusSpec | None = None,
) -> Observation:
    """One observation; raises ``RedisError``/``OSError`` when Redis cannot be read.

    With ``prometheus``, ``Observation.analytics`` is its queries' verdict (unknown,
    never an exception, when Prometheus cannot answer), read alongside the probe."""
    shard_list = await shards.current(redis)
    stats = await streams.queue_stats(redis, shard_list)
    published = await views.read_stats(redis)
    relays = await views.read_stats(redis, RELAY_STATS_PREFIX)
    # Every relay counts the one outbox table: the latest count and the quota they hold it to.
    counted = [v for v in relays.values() if isinstance(v.get("outbox_rows"), int)]
    newest = max(counted, key=lambda v: float(v.get("at", 0.0)), default=None)
    used = await pressure_usage(redis, shard_list) if queue_quota else None
    probe_ok, analytics = await asyncio.gather(
        _probe(client, health_url), _verdict(client, prometheus)
    )
    return Observation(
        at=time.time(),
        lag=max(0, stats.length - stats.pending),
        pending=stats.pending,
        forwarders=forwarder_views(published),
        queue_bytes=used,
        queue_quota=queue_quota,
        outbox_rows=None if newest is None else int(newest["outbox_rows"]),
        outbox_quota=None if newest is None else newest.get("outbox_quota"),
        probe_ok=probe_ok,
        analytics=analytics,
    )
