"""The order service as an ASGI factory for multi-process serving (``orders --workers N``).

uvicorn's worker processes import this and build the app from ``TRACKRELAY_*``
variables, which the parent sets from its resolved settings. Workers never run
the relay (one relay process runs beside them) nor migrations (the parent has).
"""

from __future__ import annotations

from fastapi import FastAPI

from trackrelay.config.settings import OrderSettings
from trackrelay.orders.app import create_app


def create_from_env() -> FastAPI:
    settings = OrderSettings(run_relay=False, migrate_on_start=False)
    return create_app(settings)
