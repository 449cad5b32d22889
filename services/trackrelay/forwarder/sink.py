"""The default HTTP sink: ``POST {analytics_url}/v1/track`` with a batch of events.

Every push carries a hard deadline over the whole request (``asyncio.timeout_at``),
not only httpx-style per-phase timeouts, which a slowly trickling response
outlives. The deadline also guards every write to the socket: once it has passed,
not one more byte of the request leaves this process, even if the process was
frozen (SIGSTOP) between deciding to push and sending. So the request is either
fully written before the deadline or never complete at analytics. The ownership
argument that needs this is in ``forwarder/worker.py``.

Events travel as the raw JSON the relay wrote, joined into the body without
being decoded and encoded again. Timeouts and connection errors are failures
to retry, never exceptions for the caller.
"""

from __future__ import annotations

import asyncio
import contextvars
import ssl
import time
import typing
from urllib.parse import urlsplit

import httpcore

from trackrelay.control.push_outcome import Outcome, PushResult, from_answer

_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "trackrelay_push_deadline", default=None
)


_EXPIRED = PushResult(Outcome.EXPIRED, detail="ownership window closed before sending")
MAX_ANSWER = 64 * 1024
"""Bytes of an answer's body read at most: analytics' answer only says yes or no, and a
body that never ends must not grow the forwarder's memory."""


class DeadlinePassed(Exception):
    """The push's ownership window closed before this write: nothing more is sent.

    Not an ``httpcore.WriteError``: httpcore swallows those to read an early answer.
    """


class _GuardedStream(httpcore.AsyncNetworkStream):
    """A socket stream that refuses to write once the current push's deadline has passed."""

    def __init__(self, inner: httpcore.AsyncNetworkStream) -> None:
        self.inner = inner

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return await self.inner.read(max_bytes, timeout)

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        deadline = _DEADLINE.get()
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlinePassed("push deadline passed before the request was sent")
        await self.inner.write(buffer, timeout)

    async def aclose(self) -> None:
        await self.inner.aclose()

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        return _GuardedStream(await self.inner.start_tls(ssl_context, server_hostname, timeout))

    def get_extra_info(self, info: str) -> typing.Any:
        return self.inner.get_extra_info(info)


class _GuardedBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.inner = httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: typing.Iterable[typing.Any] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        stream = await self.inner.connect_tcp(host, port, timeout, local_address, socket_options)
        return _GuardedStream(stream)

    async def sleep(self, seconds: float) -> None:
        await self.inner.sleep(seconds)


class HttpSink:
    def __init__(self, analytics_url: str, timeout: float, max_connections: int = 64) -> None:
        self.url = analytics_url.rstrip("/") + "/v1/track"
        parts = urlsplit(self.url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"analytics URL must be http(s)://host[:port][/path], not {analytics_url!r}"
            )
        self.timeout = timeout
        self.pool = httpcore.AsyncConnectionPool(
            max_connections=max_connections,
            keepalive_expiry=30.0,
            network_backend=_GuardedBackend(),
        )

    async def push(self, raw_events: list[bytes], deadline: float | None = None) -> PushResult:
        """POST the events; the whole request ends by ``deadline`` (``time.monotonic``).

        Without a deadline, ``timeout`` seconds from now.
        """
        body = b'{"events":[' + b",".join(raw_events) + b"]}"
        if deadline is None:
            deadline = time.monotonic() + self.timeout
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return _EXPIRED
        token = _DEADLINE.set(deadline)
        phase = min(remaining, self.timeout)
        try:
            async with asyncio.timeout(remaining):
                status, headers, text = await self._answer(body, phase)
        except DeadlinePassed:
            return _EXPIRED
        except (TimeoutError, httpcore.TimeoutException):
            return PushResult(
                Outcome.FAILED,
                detail=f"no complete answer within {remaining:.2f}s",
                timed_out=True,
            )
        except httpcore.ProtocolError as exc:
            return PushResult(Outcome.FAILED, detail=f"protocol error: {exc}")
        except (httpcore.NetworkError, httpcore.UnsupportedProtocol, OSError) as exc:
            return PushResult(Outcome.FAILED, detail=f"{type(exc).__name__}: {exc}")
        finally:
            _DEADLINE.reset(token)
        return from_answer(status, headers, text)

    async def _answer(self, body: bytes, phase: float) -> tuple[int, dict[str, str], bytes]:
        """POST ``body``; the status, the headers and at most ``MAX_ANSWER`` bytes of the
        answer. The rest is never read: a huge or endless body costs nothing (the
        connection is closed instead of going back to the pool)."""
        async with self.pool.stream(
            "POST",
            self.url,
            headers={"content-type": "application/json"},
            content=body,
            extensions={
                "timeout": {"connect": phase, "read": phase, "write": phase, "pool": phase}
            },
        ) as response:
            text = b""
            async for chunk in typing.cast(typing.AsyncIterable[bytes], response.stream):
                text += chunk[: MAX_ANSWER - len(text)]
                if len(text) >= MAX_ANSWER:
                    break
            headers = {
                k.decode("latin-1").lower(): v.decode("latin-1") for k, v in response.headers
            }
            return response.status, headers, text

    async def aclose(self) -> None:
        await self.pool.aclose()
