"""The order service's ASGI middleware: the body size limit and the latency histogram.

Pure ASGI rather than ``BaseHTTPMiddleware``: both sit on every request of the
hot path, and the limit must answer 413 before any handler parses a byte.
"""

from __future__ import annotations

import time

from fastapi.responses import JSONResponse
from prometheus_client import Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class BodyLimit:
    """Answer 413 once a request body passes ``limit`` bytes, before anything is parsed."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app = app
        self.limit = limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope.get("headers", []):
            if name == b"content-length" and value.isdigit() and int(value) > self.limit:
                await self._reject(send)
                return
        # Bodies are small (kilobytes): read the whole body first, then replay it.
        chunks: list[bytes] = []
        seen = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            seen += len(chunk)
            if seen > self.limit:
                await self._reject(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _reject(self, send: Send) -> None:
        response = JSONResponse(
            {"detail": f"request body larger than {self.limit} bytes"}, status_code=413
        )
        await response({"type": "http"}, _no_receive, send)


class ObserveLatency:
    """Record each request's latency by method, route template and status (pure ASGI)."""

    def __init__(self, app: ASGIApp, histogram: Histogram) -> None:
        self.app = app
        self.histogram = histogram

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_status(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_status)
        finally:
            route = getattr(scope.get("route"), "path", "unmatched")
            self.histogram.labels(scope["method"], route, str(status)).observe(
                time.perf_counter() - started
            )


def _replay(messages: list[Message], then: Receive) -> Receive:
    """A receive channel that yields ``messages`` first, then the real channel."""
    pending = list(messages)

    async def receive() -> Message:
        if pending:
            return pending.pop(0)
        return await then()

    return receive


async def _no_receive() -> Message:
    return {"type": "http.disconnect"}
