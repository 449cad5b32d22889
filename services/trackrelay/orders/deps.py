"""What the order routes need from the running app, as ``Annotated`` dependencies.

The app's lifespan opens the engine and the writer and ``create_app`` builds the
metrics and the order model; each lives on ``app.state`` and reaches a route
through one alias here (``engine: EngineDep``). The dependencies are coroutines:
FastAPI runs a plain function dependency in a worker thread. ``POST /v1/orders``
takes one dependency, ``Intake``, rather than four: FastAPI solves each
dependency anew on every request, and on the path whose throughput matters one
costs about a quarter of what four do. The ``*_of`` accessors serve the
exception handlers, which get the request and no dependencies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.ext.asyncio import AsyncEngine

from trackrelay.orders.metrics import OrderMetrics
from trackrelay.orders.models import OrderRequest
from trackrelay.orders.pg_writer import PgOrderWriter


@dataclass(frozen=True, slots=True)
class Intake:
    """What taking an order needs: its request model, the store, the counters."""

    model: type[OrderRequest]
    """``OrderRequest`` with this service's item limit (``max_items``)."""
    engine: AsyncEngine
    writer: PgOrderWriter | None
    """The raw asyncpg insert on PostgreSQL; None on SQLite (the engine inserts)."""
    metrics: OrderMetrics
    committed: Callable[[], None] | None
    """Wakes the relay running in this process (``relay.wakeup``), if one does."""


def metrics_of(request: Request) -> OrderMetrics:
    metrics: OrderMetrics = request.app.state.metrics
    return metrics


async def _engine(request: Request) -> AsyncEngine:
    engine: AsyncEngine = request.app.state.engine
    return engine


async def _metrics(request: Request) -> OrderMetrics:
    return metrics_of(request)


async def _intake(request: Request) -> Intake:
    state = request.app.state
    relay = state.relay
    committed = relay.wakeup.notify if relay is not None and relay.settings.relay_wakeups else None
    return Intake(state.order_model, state.engine, state.writer, state.metrics, committed)


EngineDep = Annotated[AsyncEngine, Depends(_engine)]
"""The order store's engine (reads, idempotency look-ups, readiness)."""
MetricsDep = Annotated[OrderMetrics, Depends(_metrics)]
IntakeDep = Annotated[Intake, Depends(_intake)]
