"""Serve an ASGI app with uvicorn until SIGINT/SIGTERM, draining requests within a grace period."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn
from starlette.types import ASGIApp

from trackrelay.runtime.signals import stop_on_signals


class QuietServer(uvicorn.Server):
    """uvicorn without its own signal capture: our ``stop_on_signals`` owns SIGINT/SIGTERM."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def listening_socket(host: str, port: int, shared: bool = False) -> socket.socket:
    """A TCP socket bound to ``host:port`` (``shared``: other processes may bind it too,
    and the kernel spreads connections among them). ``OSError`` names the address."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if shared:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    try:
        sock.bind((host, port))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"cannot listen on {host}:{port}: {exc.strerror}") from exc
    return sock


def make_server(
    app: ASGIApp, host: str, port: int, log_level: str | None, grace: int = 5
) -> QuietServer:
    """``log_level`` None: a second server in a process, which leaves uvicorn's logging
    as the first one configured it."""
    # No access log: a line per request at INFO costs more CPU than the order itself;
    # request counts and latencies are in /metrics.
    logging: dict[str, Any] = {"log_level": log_level} if log_level else {"log_config": None}
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        access_log=False,
        timeout_graceful_shutdown=grace,
        **logging,
    )
    return QuietServer(config)


async def serve_until_signal(
    app: ASGIApp, host: str, port: int, log_level: str, grace: int = 5
) -> None:
    """Serve until SIGINT/SIGTERM; requests still running after ``grace`` seconds are cut.

    Fails with ``RuntimeError`` when the server cannot start (port taken, bad host).
    """
    server = make_server(app, host, port, log_level, grace)
    async with stop_on_signals() as stop:
        serving = asyncio.create_task(server.serve())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stopping.cancel()
        try:
            await serving
        except SystemExit as exc:  # uvicorn exits the process when startup fails
            raise RuntimeError(f"could not serve on {host}:{port} (see the log above)") from exc
    if not server.started and not stop.is_set():
        raise RuntimeError(f"could not serve on {host}:{port} (see the log above)")
