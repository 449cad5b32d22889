"""The forwarder's HTTP face for its supervisor: ``/healthz``, ``/readyz`` and ``/metrics``.

Liveness: every lane and the housekeeping task are running. Readiness: Redis
answered the last command. Kubernetes probes and ``trackrelay up`` use these.
"""

from __future__ import annotations

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from trackrelay.forwarder.fleet import ForwarderFleet


def create_health_app(forwarder: ForwarderFleet) -> Starlette:
    async def healthz(_request: Request) -> JSONResponse:
        running, expected = forwarder.tasks_running, forwarder.tasks_expected
        body = {"consumer": forwarder.consumer, "tasks": running, "expected": expected}
        if running < expected:
            return JSONResponse({"status": "starting or failing", **body}, status_code=503)
        return JSONResponse({"status": "ok", **body})

    async def readyz(_request: Request) -> JSONResponse:
        if not forwarder.redis_ok:
            return JSONResponse({"status": "unready", "redis": "unreachable"}, status_code=503)
        return JSONResponse({"status": "ready"})

    async def metrics(_request: Request) -> Response:
        return Response(generate_latest(forwarder.metrics.registry), media_type=CONTENT_TYPE_LATEST)

    return Starlette(
        routes=[Route("/healthz", healthz), Route("/readyz", readyz), Route("/metrics", metrics)]
    )
