"""The simulator's routes besides ``/v1/track``: popularity (what analytics counted), the
admin API that steers faults, scenarios and capacity, health and metrics."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from trackrelay.analytics_sim.model import Capacity, Fault, Schedule
from trackrelay.analytics_sim.state import Journal, SimState
from trackrelay.analytics_sim.track import SimMetrics, Tracker


@dataclass(frozen=True, slots=True)
class Simulator:
    """Everything one simulator app holds (``app.state.simulator``)."""

    state: SimState
    tracker: Tracker
    metrics: SimMetrics
    journal: Journal | None


def simulator(request: Request) -> Simulator:
    sim: Simulator = request.app.state.simulator
    return sim


Sim = Annotated[Simulator, Depends(simulator)]

router = APIRouter()
"""What analytics serves: tracking, popularity, health, metrics."""
admin = APIRouter()
"""Steering for tests and demos (faults, scenarios, capacity, state): off with
``sim_admin`` false, as the chart has it unless asked."""


@router.post("/v1/track")
async def track(request: Request, sim: Sim) -> Response:
    return await sim.tracker.track(request)


@router.get("/v1/popularity")
async def popularity(sim: Sim, top: int = Query(default=10, ge=1, le=100_000)) -> dict[str, Any]:
    """The top SKUs by ``sum(qty * weight)``, and that sum over every SKU. Where counts came
    from trackrelay's bounded sketch, a SKU's true total lies in ``[min_qty, max_qty]``
    (given when not ``qty`` itself), and ``unlisted_max`` is the most a SKU not counted
    at all may have had."""
    state = sim.state
    counts = state.popularity
    floors = sum(state.floors.values())

    def row(sku: str, qty: float) -> dict[str, Any]:
        low, high = state.bounds(sku, floors)
        out: dict[str, Any] = {"sku": sku, "qty": qty}
        if (low, high) != (qty, qty):
            out |= {"min_qty": low, "max_qty": high}
        return out

    return {
        "top": [row(sku, qty) for sku, qty in counts.most_common(top)],
        "total": sum(counts.values()),
        "skus": len(counts),
        "unlisted_max": floors,
    }


@admin.get("/admin/state")
async def admin_state(sim: Sim) -> dict[str, Any]:
    return sim.state.snapshot(time.monotonic())


async def _change(
    request: Request, sim: Simulator, change: Callable[[SimState, dict[str, Any]], None]
) -> JSONResponse:
    """Apply an admin change read from the body: the state after it, or 422 saying why not."""
    try:
        change(sim.state, await json_object(request))
    except ValueError as exc:
        return JSONResponse({"detail": str(exc)}, status_code=422)
    return JSONResponse(sim.state.snapshot(time.monotonic()))


def _set_fault(state: SimState, body: dict[str, Any]) -> None:
    state.fault, state.schedule = Fault.parse(body), None


def _start_scenario(state: SimState, body: dict[str, Any]) -> None:
    state.schedule, state.schedule_started = Schedule.parse(body), time.monotonic()


def _set_capacity(state: SimState, body: dict[str, Any]) -> None:
    changes = Capacity.changes(body)
    state.capacity.accrue(time.monotonic())  # the other client's flow so far, at the old values
    for name, value in changes.items():
        setattr(state.capacity, name, value)


@admin.post("/admin/fault")
async def admin_fault(request: Request, sim: Sim) -> JSONResponse:
    """Switch to one fault now (and leave any running scenario)."""
    return await _change(request, sim, _set_fault)


@admin.post("/admin/scenario")
async def admin_scenario(request: Request, sim: Sim) -> JSONResponse:
    """Start a timed scenario of phases now."""
    return await _change(request, sim, _start_scenario)


@admin.get("/admin/timeline")
async def admin_timeline(
    sim: Sim, since: float = Query(default=0.0), raw: bool = Query(default=False)
) -> dict[str, Any]:
    """Per second since ``since`` (Unix time): accepted events, statuses, latency
    (``raw``: every response time too, and each accepted request's response time with its
    idle one)."""
    timeline = sim.state.timeline
    return {"seconds": [timeline[t].as_dict(t, raw) for t in sorted(timeline) if t >= int(since)]}


@admin.post("/admin/capacity")
async def admin_capacity(request: Request, sim: Sim) -> JSONResponse:
    """Change the capacity model now: ``rate`` (events/s, 0 unlimited), ``overhead``,
    ``queue_limit`` (events), ``collapse``, ``other_client`` (events/s another client
    takes)."""
    return await _change(request, sim, _set_capacity)


@admin.post("/admin/reset")
async def admin_reset(sim: Sim) -> dict[str, Any]:
    state = sim.state
    state.seen.clear()
    state.popularity.clear()
    state.errors.clear()
    state.floors.clear()
    state.floors_listed.clear()
    state.requests.clear()
    state.accepted = state.lines = state.duplicates = state.overlaps = 0
    state.capacity.other_served = state.capacity.other_refused = 0.0
    state.timeline.clear()
    if sim.journal is not None:
        sim.journal.clear()
    return state.snapshot(time.monotonic())


@router.get("/healthz")
async def healthz() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz")
async def readyz() -> dict[str, str]:
    return {"status": "ready"}


@router.get("/metrics")
async def metrics(sim: Sim) -> Response:
    return Response(generate_latest(sim.metrics.registry), media_type=CONTENT_TYPE_LATEST)


async def json_object(request: Request) -> dict[str, Any]:
    """The request body as a JSON object, or ``ValueError`` saying what is wrong."""
    try:
        data = json.loads(await request.body())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ValueError("body must be a JSON object")
    return data
