"""The simulator's HTTP face: ``POST /v1/track`` plus admin, popularity and metrics.

All decisions come from ``model``; this module keeps the counters and sleeps
for the delays the model hands out.
"""

from __future__ import annotations

import asyncio
import collections
import json
import random
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, generate_latest

from trackrelay.analytics_sim.model import (
    Capacity,
    Fault,
    Mode,
    Schedule,
    Verdict,
    check_events,
    extra_latency,
    fault_verdict,
)
from trackrelay.config.settings import SimulatorSettings
from trackrelay.control.percentile import percentile

TIMELINE_SECONDS = 3600


@dataclass
class Second:
    """One second of the simulator's life, keyed by the wall-clock second a request arrived."""

    accepted: int = 0
    received: int = 0
    """Events in well-formed requests, whatever the answer (attempts)."""
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    """Response times of answered requests (seconds), as the simulator served them."""

    def as_dict(self, at: int, raw: bool = False) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        return {
            "t": at,
            "accepted": self.accepted,
            "received": self.received,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50": percentile(ordered, 0.5),
            "p99": percentile(ordered, 0.99),
            "max": ordered[-1] if ordered else None,
            **({"latencies": ordered} if raw else {}),
        }


@dataclass
class SimState:
    capacity: Capacity
    rng: random.Random
    fault: Fault = field(default_factory=Fault)
    schedule: Schedule | None = None
    schedule_started: float = 0.0
    seen: set[str] = field(default_factory=set)
    popularity: collections.Counter[str] = field(default_factory=collections.Counter)
    inflight: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: collections.Counter[int] = field(default_factory=collections.Counter)
    accepted: int = 0
    lines: int = 0
    """Order lines the accepted events stand for (an aggregate counts its ``lines``)."""
    duplicates: int = 0
    overlaps: int = 0
    timeline: dict[int, Second] = field(default_factory=dict)
    """Per wall-clock second: what was accepted, answered and how fast (benchmarks read it)."""

    def second(self, at: float) -> Second:
        key = int(at)
        if key not in self.timeline:
            self.timeline[key] = Second()
            while len(self.timeline) > TIMELINE_SECONDS:
                del self.timeline[min(self.timeline)]
        return self.timeline[key]

    def count(self, event_id: str, sku: str, amount: float, lines: int) -> None:
        """Count one new event (the caller checked it is not a duplicate)."""
        self.seen.add(event_id)
        self.popularity[sku] += amount  # type: ignore[assignment]  # Counter of floats
        self.lines += lines

    def current_fault(self, now: float) -> Fault:
        if self.schedule is not None:
            return self.schedule.fault_at(now - self.schedule_started)
        return self.fault

    def snapshot(self, now: float) -> dict[str, Any]:
        fault = self.current_fault(now)
        return {
            "mode": fault.mode.value,
            "fault": {
                "mode": fault.mode.value,
                "latency": fault.latency,
                "hang": fault.hang,
                "error_rate": fault.error_rate,
                "poison_sku": fault.poison_sku,
                "poison_status": fault.poison_status,
            },
            "scenario": self.schedule is not None,
            "accepted": self.accepted,
            "lines": self.lines,
            "duplicates": self.duplicates,
            "overlaps": self.overlaps,
            "requests": {str(k): v for k, v in sorted(self.requests.items())},
            "backlog_events": self.capacity.backlog(now),
            "capacity": {
                "rate": self.capacity.rate,
                "overhead": self.capacity.overhead,
                "queue_limit": self.capacity.queue_limit,
                "collapse": self.capacity.collapse,
            },
            "distinct_skus": len(self.popularity),
        }


class _Journal:
    """Accepted events, one JSON array of records per accepted request, replayed at start."""

    def __init__(self, path: Path, state: SimState) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open() as f:
                for line in f:
                    try:
                        records = json.loads(line)
                    except ValueError:
                        break  # a line cut short by a crash: what came before it counts
                    for event_id, sku, amount, lines in records:
                        if event_id not in state.seen:
                            state.count(event_id, sku, amount, lines)
                            state.accepted += 1
        self.file = path.open("a", encoding="utf-8")

    def write(self, records: list[tuple[str, str, float, int]]) -> None:
        self.file.write(json.dumps(records) + "\n")
        self.file.flush()  # in the kernel: survives the process being killed

    def clear(self) -> None:
        self.file.truncate(0)


async def _json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or ``ValueError`` saying what is wrong."""
    try:
        data = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data


async def _trickle(body: bytes, over: float) -> AsyncIterator[bytes]:
    """Leading whitespace, one byte at a time over ``over`` seconds, then ``body``."""
    steps = max(1, int(over / 0.1))
    for _ in range(steps):
        yield b" "
        await asyncio.sleep(over / steps)
    yield body


def load_scenario(path: str) -> Schedule:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        import yaml  # scenario files may be YAML too

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"scenario {path}: expected an object with 'phases'")
    try:
        return Schedule.parse(data)
    except ValueError as exc:
        raise ValueError(f"scenario {path}: {exc}") from None


def create_app(settings: SimulatorSettings) -> FastAPI:
    state = SimState(
        capacity=Capacity(
            rate=settings.sim_rate,
            overhead=settings.sim_overhead,
            queue_limit=settings.sim_queue_limit,
            collapse=settings.sim_collapse,
        ),
        rng=random.Random(settings.sim_seed),
    )
    if settings.sim_scenario is not None:
        state.schedule = load_scenario(str(settings.sim_scenario))
        state.schedule_started = time.monotonic()
    registry = CollectorRegistry()
    m_requests = Counter(
        "analytics_sim_requests", "Track requests by status.", ["status"], registry=registry
    )
    m_accepted = Counter("analytics_sim_events_accepted", "New events counted.", registry=registry)
    m_dupes = Counter(
        "analytics_sim_events_duplicate", "Events dropped as duplicates.", registry=registry
    )
    m_overlaps = Counter(
        "analytics_sim_overlapping_deliveries",
        "Events delivered while the same id was still in flight.",
        registry=registry,
    )

    journal = _Journal(settings.sim_journal, state) if settings.sim_journal else None

    app = FastAPI(title="trackrelay analytics simulator", version="0.1.0")
    app.state.sim = state

    def answer(
        verdict: Verdict, body: dict[str, Any], arrived: float | None = None
    ) -> JSONResponse:
        headers = {}
        if verdict.retry_after is not None:
            headers["Retry-After"] = str(int(verdict.retry_after))
        if arrived is not None:
            second = state.second(arrived)
            second.statuses[verdict.status] += 1
            second.latencies.append(time.time() - arrived)
        state.requests[verdict.status] += 1
        m_requests.labels(str(verdict.status)).inc()
        return JSONResponse(body, status_code=verdict.status, headers=headers)

    @app.post("/v1/track")
    async def track(request: Request) -> Response:
        arrived = time.time()
        body = await request.body()
        if settings.sim_max_body_bytes and len(body) > settings.sim_max_body_bytes:
            return answer(
                Verdict(413), {"detail": f"body over {settings.sim_max_body_bytes} bytes"}
            )
        try:
            checked = check_events(json.loads(body))
        except (ValueError, UnicodeDecodeError) as exc:
            return answer(Verdict(400), {"detail": f"malformed body: {exc}"})
        if checked.bad:
            return answer(
                Verdict(400), {"detail": "the batch holds bad events", "bad_events": checked.bad}
            )
        ids = [ev["event_id"] for ev in checked.good]
        state.second(arrived).received += len(ids)
        for ev_id in ids:
            if state.inflight[ev_id]:
                state.overlaps += 1
                m_overlaps.inc()
            state.inflight[ev_id] += 1
        try:
            now = time.monotonic()
            fault = state.current_fault(now)
            skus = frozenset(str(ev["sku"]) for ev in checked.good)
            verdict = fault_verdict(fault, state.rng, skus) or state.capacity.admit(now, len(ids))
            delay = verdict.delay + (extra_latency(fault) if verdict.status == 200 else 0.0)
            if delay > 0:
                await asyncio.sleep(delay)
            if verdict.status != 200:
                return answer(verdict, {"detail": f"analytics is {fault.mode.value}"}, arrived)
            counted = []
            for ev in checked.good:
                if ev["event_id"] in state.seen:
                    continue
                record = (
                    ev["event_id"],
                    ev["sku"],
                    ev["qty"] * float(ev.get("weight", 1.0)),
                    int(ev.get("lines", 1)),
                )
                state.count(*record)
                counted.append(record)
            if journal is not None and counted:
                journal.write(counted)  # before the answer: what we say we have, we keep
            new = len(counted)
            dupes = len(ids) - new
            state.accepted += new
            state.second(arrived).accepted += new
            state.duplicates += dupes
            m_accepted.inc(new)
            m_dupes.inc(dupes)
            if fault.mode is Mode.TRICKLE:
                state.requests[verdict.status] += 1
                m_requests.labels(str(verdict.status)).inc()
                body = json.dumps({"accepted": new, "duplicates": dupes}).encode()
                return StreamingResponse(_trickle(body, fault.hang), media_type="application/json")
            return answer(verdict, {"accepted": new, "duplicates": dupes}, arrived)
        finally:
            for ev_id in ids:
                state.inflight[ev_id] -= 1
                if not state.inflight[ev_id]:
                    del state.inflight[ev_id]

    @app.get("/v1/popularity")
    async def popularity(top: int = Query(default=10, ge=1, le=100_000)) -> dict[str, Any]:
        """The top SKUs by ``sum(qty * weight)``, and that sum over every SKU."""
        return {
            "top": [{"sku": sku, "qty": qty} for sku, qty in state.popularity.most_common(top)],
            "total": sum(state.popularity.values()),
            "skus": len(state.popularity),
        }

    @app.get("/admin/state")
    async def admin_state() -> dict[str, Any]:
        return state.snapshot(time.monotonic())

    @app.post("/admin/fault")
    async def admin_fault(request: Request) -> JSONResponse:
        """Switch to one fault now (and leave any running scenario)."""
        try:
            fault = Fault.parse(await _json_object(request))
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        state.fault, state.schedule = fault, None
        return JSONResponse(state.snapshot(time.monotonic()))

    @app.post("/admin/scenario")
    async def admin_scenario(request: Request) -> JSONResponse:
        """Start a timed scenario of phases now."""
        try:
            schedule = Schedule.parse(await _json_object(request))
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        state.schedule, state.schedule_started = schedule, time.monotonic()
        return JSONResponse(state.snapshot(time.monotonic()))

    @app.get("/admin/timeline")
    async def admin_timeline(
        since: float = Query(default=0.0), raw: bool = Query(default=False)
    ) -> dict[str, Any]:
        """Per second since ``since`` (Unix time): accepted events, statuses, latency
        (``raw``: every response time too)."""
        return {
            "seconds": [
                state.timeline[t].as_dict(t, raw) for t in sorted(state.timeline) if t >= int(since)
            ]
        }

    @app.post("/admin/capacity")
    async def admin_capacity(request: Request) -> JSONResponse:
        """Change the capacity model now: ``rate`` (events/s, 0 unlimited), ``overhead``,
        ``queue_limit`` (events), ``collapse``."""
        try:
            data = await _json_object(request)
            changes = Capacity.changes(data)
        except ValueError as exc:
            return JSONResponse({"detail": str(exc)}, status_code=422)
        for name, value in changes.items():
            setattr(state.capacity, name, value)
        return JSONResponse(state.snapshot(time.monotonic()))

    @app.post("/admin/reset")
    async def admin_reset() -> dict[str, Any]:
        state.seen.clear()
        state.popularity.clear()
        state.requests.clear()
        state.accepted = state.lines = state.duplicates = state.overlaps = 0
        state.timeline.clear()
        if journal is not None:
            journal.clear()
        return state.snapshot(time.monotonic())

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> dict[str, str]:
        return {"status": "ready"}

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app
