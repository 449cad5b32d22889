"""``POST /v1/track``: the push contract as analytics answers it, with the faults and the
capacity model ``model`` decides, and every new event counted once."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

from fastapi import Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from trackrelay.analytics_sim.model import (
    Mode,
    Verdict,
    age,
    check_events,
    extra_latency,
    fault_verdict,
)
from trackrelay.analytics_sim.state import Journal, SimState

FRESHNESS_BUCKETS = (0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
"""Seconds from an event's order to its count: fine up to the 100 ms a healthy path takes."""
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
"""Seconds: fine where a healthy analytics answers, every 0.25-0.5 s around the thresholds."""


class SimMetrics:
    """What the simulator exports at ``/metrics``, as a real analytics service would: its
    request latency (a histogram, seconds), requests in flight, queued work (seconds and
    events) and answers by status (429s among them). The names are stable: the default
    Prometheus queries (``control.analytics_health.SIMULATOR_QUERIES``) read them."""

    def __init__(self, registry: CollectorRegistry, state: SimState | None = None) -> None:
        self.registry = registry
        self.requests = Counter(
            "analytics_sim_requests", "Track requests by status.", ["status"], registry=registry
        )
        for status in ("200", "429", "500", "503"):
            self.requests.labels(status)  # at 0 from the start: a share of them is never empty
        self.duration = Histogram(
            "analytics_sim_request_duration_seconds",
            "Seconds from a track request's arrival to its answer (its head), every status.",
            buckets=LATENCY_BUCKETS,
            registry=registry,
        )
        self.in_flight = Gauge(
            "analytics_sim_requests_in_flight", "Track requests being answered.", registry=registry
        )
        queued_seconds = Gauge(
            "analytics_sim_queued_work_seconds",
            "Seconds of work queued ahead of a request arriving now (the capacity model's queue).",
            registry=registry,
        )
        queued_events = Gauge(
            "analytics_sim_queued_events",
            "Events of work queued; past the queue limit, requests are answered 429.",
            registry=registry,
        )
        if state is not None:
            queued_seconds.set_function(lambda: state.capacity.queued_seconds(time.monotonic()))
            queued_events.set_function(lambda: state.capacity.backlog(time.monotonic()))
        self.accepted = Counter(
            "analytics_sim_events_accepted", "New events counted.", registry=registry
        )
        self.dupes = Counter(
            "analytics_sim_events_duplicate", "Events dropped as duplicates.", registry=registry
        )
        self.freshness = Histogram(
            "analytics_sim_event_freshness_seconds",
            "Seconds from each new event's occurred_at (its order's moment) to its count.",
            buckets=FRESHNESS_BUCKETS,
            registry=registry,
        )
        self.overlaps = Counter(
            "analytics_sim_overlapping_deliveries",
            "Events delivered while the same id was still in flight.",
            registry=registry,
        )


class Tracker:
    """Answers track requests against one ``SimState``."""

    def __init__(
        self,
        state: SimState,
        metrics: SimMetrics,
        journal: Journal | None,
        max_body_bytes: int | None,
    ) -> None:
        self.state = state
        self.metrics = metrics
        self.journal = journal
        self.max_body_bytes = max_body_bytes

    def answer(
        self,
        verdict: Verdict,
        body: dict[str, Any],
        arrived: float | None = None,
        queued: float | None = None,
    ) -> JSONResponse:
        """``queued``: seconds an accepted request waited behind work queued before it."""
        headers = {}
        if verdict.retry_after is not None:
            headers["Retry-After"] = str(int(verdict.retry_after))
        if arrived is not None:
            second = self.state.second(arrived)
            second.statuses[verdict.status] += 1
            took = time.time() - arrived
            second.latencies.append(took)
            if queued is not None:
                second.served.append((took, took - queued))
        self._answered(verdict.status)
        return JSONResponse(body, status_code=verdict.status, headers=headers)

    def _answered(self, status: int) -> None:
        self.state.requests[status] += 1
        self.metrics.requests.labels(str(status)).inc()

    async def track(self, request: Request) -> Response:
        """One track request's answer, its latency and its time in flight measured."""
        started = time.monotonic()
        self.metrics.in_flight.inc()
        try:
            return await self._track(request)
        finally:
            self.metrics.in_flight.dec()
            self.metrics.duration.observe(time.monotonic() - started)

    async def _track(self, request: Request) -> Response:
        arrived = time.time()
        body = await request.body()
        if self.max_body_bytes and len(body) > self.max_body_bytes:
            return self.answer(Verdict(413), {"detail": f"body over {self.max_body_bytes} bytes"})
        try:
            checked = check_events(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            return self.answer(Verdict(400), {"detail": f"malformed body: {exc}"})
        if checked.bad:
            detail = {"detail": "the batch holds bad events", "bad_events": checked.bad}
            return self.answer(Verdict(400), detail)
        ids = [ev["event_id"] for ev in checked.good]
        self.state.second(arrived).received += len(ids)
        self._enter(ids)
        try:
            return await self._admit(checked.good, ids, arrived)
        finally:
            self._leave(ids)

    def _enter(self, ids: list[str]) -> None:
        for ev_id in ids:
            if self.state.inflight[ev_id]:
                self.state.overlaps += 1
                self.metrics.overlaps.inc()
            self.state.inflight[ev_id] += 1

    def _leave(self, ids: list[str]) -> None:
        for ev_id in ids:
            self.state.inflight[ev_id] -= 1
            if not self.state.inflight[ev_id]:
                del self.state.inflight[ev_id]

    async def _admit(self, good: list[dict[str, Any]], ids: list[str], arrived: float) -> Response:
        state = self.state
        now = time.monotonic()
        fault = state.current_fault(now)
        skus = frozenset(str(ev["sku"]) for ev in good)
        verdict = fault_verdict(fault, state.rng, skus) or state.capacity.admit(now, len(ids))
        delay = verdict.delay + (extra_latency(fault) if verdict.status == 200 else 0.0)
        if delay > 0:
            await asyncio.sleep(delay)
        if verdict.status != 200:
            return self.answer(verdict, {"detail": f"analytics is {fault.mode.value}"}, arrived)
        new = self._count(good, arrived)
        dupes = len(ids) - new
        state.accepted += new
        state.second(arrived).accepted += new
        state.duplicates += dupes
        self.metrics.accepted.inc(new)
        self.metrics.dupes.inc(dupes)
        if fault.mode is Mode.TRICKLE:
            self._answered(verdict.status)
            body = json.dumps({"accepted": new, "duplicates": dupes}).encode()
            return StreamingResponse(_trickle(body, fault.hang), media_type="application/json")
        counts = {"accepted": new, "duplicates": dupes}
        return self.answer(verdict, counts, arrived, queued=verdict.queued)

    def _count(self, good: list[dict[str, Any]], arrived: float) -> int:
        """Count the events not seen before, and how fresh each is; journal them before
        the answer says so."""
        counted = []
        now = time.time()
        fresh = self.state.second(arrived).freshness
        for ev in good:
            if ev["event_id"] in self.state.seen:
                continue
            record = (
                ev["event_id"],
                ev["sku"],
                ev["qty"] * float(ev.get("weight", 1.0)),
                int(ev.get("lines", 1)),
                float(ev.get("error", 0.0)),
                float(ev.get("floor", 0.0)),
                str(ev["order_id"]),
            )
            self.state.count(*record)
            counted.append(record)
            seconds = age(ev["occurred_at"], now)
            if seconds is not None:
                fresh.append(seconds)
                self.metrics.freshness.observe(seconds)
        if self.journal is not None and counted:
            self.journal.write(counted)  # before the answer: what we say we have, we keep
        return len(counted)


async def _trickle(body: bytes, over: float) -> AsyncIterator[bytes]:
    """Leading whitespace, one byte at a time over ``over`` seconds, then ``body``."""
    steps = max(1, int(over / 0.1))
    for _ in range(steps):
        yield b" "
        await asyncio.sleep(over / steps)
    yield body
