"""The simulator's HTTP face, built by ``create_app(settings)``: ``POST /v1/track`` plus
admin, popularity and metrics.

All decisions come from ``model``; ``track`` keeps the counters and sleeps for the
delays the model hands out, ``state`` holds them, ``routes`` serves them.
"""

from __future__ import annotations

import random
import time

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from trackrelay.analytics_sim.model import Capacity
from trackrelay.analytics_sim.routes import Simulator, admin, router
from trackrelay.analytics_sim.state import Journal, SimState, load_scenario
from trackrelay.analytics_sim.track import SimMetrics, Tracker
from trackrelay.config.settings import SimulatorSettings

__all__ = ["create_app", "load_scenario"]


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
    metrics = SimMetrics(CollectorRegistry(), state)
    journal = Journal(settings.sim_journal, state) if settings.sim_journal else None
    app = FastAPI(title="trackrelay analytics simulator", version="0.1.0")
    app.state.sim = state
    app.state.simulator = Simulator(
        state=state,
        tracker=Tracker(state, metrics, journal, settings.sim_max_body_bytes),
        metrics=metrics,
        journal=journal,
    )
    app.include_router(router)
    if settings.sim_admin:
        app.include_router(admin)
    return app
