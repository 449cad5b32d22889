"""Analytics answering what no analytics should: endless bodies, redirects, garbage, a WAF.

The analytics end is a raw asyncio server written here (the one fake the project allows
is at the analytics boundary); the forwarder, its sink and Redis are the real ones.
Whatever it answers, the forwarder's memory stays bounded, the reason is stated, and
nothing is dead-lettered while analytics refuses everything.
"""

from __future__ import annotations

import asyncio
import contextlib
import tracemalloc
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.asyncio import Redis as AsyncRedis

from tests.integration.conftest import add_events, run_forwarder
from trackrelay.control.push_outcome import Outcome, PushResult
from trackrelay.forwarder.sink import HttpSink
from trackrelay.forwarder.worker import Forwarder
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.queue.keys import DLQ_STREAM, STREAM

CHUNK = b"x" * (1024 * 1024)


@dataclass
class Hostile:
    """What the server answers (``mode``) and what it saw."""

    url: str
    mode: str = "endless"
    requests: int = 0
    sent: int = 0
    closed_early: list[bool] = field(default_factory=list)


async def _read_request(reader: asyncio.StreamReader) -> bool:
    head = await reader.readuntil(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    await reader.readexactly(length)
    return True


async def _answer(server: Hostile, writer: asyncio.StreamWriter) -> None:
    if server.mode == "endless":  # a 200 whose body never ends
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n")
        try:
            for _ in range(1024):  # up to 1 GiB
                writer.write(CHUNK)
                await writer.drain()
                server.sent += len(CHUNK)
        except (ConnectionError, OSError):
            server.closed_early.append(True)
            return
        server.closed_early.append(False)
        writer.close()
        return
    body, status, extra = b"", "200 OK", b""
    if server.mode == "redirect":
        status, extra = "301 Moved Permanently", b"Location: http://elsewhere.example/v1/track\r\n"
    elif server.mode == "garbage":
        body = b"<html>this is not json</html>"
    elif server.mode == "waf":
        status, body = "400 Bad Request", b"<html>Request blocked by policy</html>"
    elif server.mode == "unavailable":
        status = "503 Service Unavailable"
    writer.write(
        f"HTTP/1.1 {status}\r\nContent-Length: {len(body)}\r\n".encode() + extra + b"\r\n" + body
    )
    await writer.drain()


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    state = Hostile(url="")

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while await _read_request(reader):
                state.requests += 1
                await _answer(state, writer)
                if state.mode == "endless":
                    break
        except (asyncio.IncompleteReadError, ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    state.url = f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}"
    yield state
    server.close()
    await server.wait_closed()


async def test_an_endless_2xx_body_is_read_no_further_than_its_first_bytes(
    hostile: Hostile,
) -> None:
    sink = HttpSink(hostile.url, 10.0)
    tracemalloc.start()
    try:
        result = await sink.push([b'{"event_id": "a"}'])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
        await sink.aclose()
    assert result.outcome is Outcome.ACCEPTED  # a 2xx is analytics' yes, whatever follows
    assert peak < 16 * 1024 * 1024, f"{peak} bytes traced for one push"
    for _ in range(100):  # the server notices the closed connection
        if hostile.closed_early:
            break
        await asyncio.sleep(0.05)
    assert hostile.closed_early == [True]
    assert hostile.sent < 64 * 1024 * 1024


async def _push_once(hostile: Hostile, mode: str) -> PushResult:
    hostile.mode = mode
    sink = HttpSink(hostile.url, 5.0)
    try:
        return await sink.push([b'{"event_id": "a"}'])
    finally:
        await sink.aclose()


async def test_a_redirect_is_a_stated_failure_never_followed(hostile: Hostile) -> None:
    result = await _push_once(hostile, "redirect")
    assert result.outcome is Outcome.FAILED and result.status == 301
    assert "redirects to http://elsewhere.example/v1/track" in result.detail


async def test_a_2xx_that_is_not_json_is_analytics_yes(hostile: Hostile) -> None:
    result = await _push_once(hostile, "garbage")
    assert result.outcome is Outcome.ACCEPTED


def _more_requests(server: Hostile, more: int) -> Callable[[AsyncRedis], Awaitable[bool]]:
    target = server.requests + more

    async def seen(_: AsyncRedis) -> bool:
        return server.requests >= target

    return seen


async def _forward(
    server: EmbeddedRedis,
    sink: HttpSink,
    until: Callable[[AsyncRedis], Awaitable[bool]],
    consumer: str,
    **settings: Any,
) -> Forwarder:
    forwarder, r = await run_forwarder(server, sink, until, consumer, **settings)
    await r.aclose()
    assert isinstance(forwarder, Forwarder)
    return forwarder


async def test_a_waf_refusing_everything_dead_letters_nothing(
    hostile: Hostile, redis_server: EmbeddedRedis
) -> None:
    """400 "for its content" to every push: the batches split down to single events, and
    none goes to the DLQ, since analytics took nothing else meanwhile."""
    hostile.mode = "waf"
    add_events(redis_server.url, 40)
    sink = HttpSink(hostile.url, 2.0)
    try:
        # 40 events in batches of 10 split to single events: 4 x 7 pushes, and retries
        until = _more_requests(hostile, 60)
        forwarder = await _forward(redis_server, sink, until, "solo", batch_size=10)
    finally:
        await sink.aclose()
    # The reason is in the forwarder's view: the status and the WAF's own words.
    assert forwarder.last_failure is not None
    assert "HTTP 400: <html>Request blocked by policy" in forwarder.last_failure
    r = AsyncRedis.from_url(redis_server.url)
    assert await r.xlen(DLQ_STREAM) == 0
    assert await r.xlen(STREAM) == 40
    await r.aclose()


async def test_ownership_moving_through_an_outage_dead_letters_nothing(
    hostile: Hostile, redis_server: EmbeddedRedis
) -> None:
    """Five forwarders in turn take the same entries over while analytics answers 503
    (each XAUTOCLAIM is a delivery, five in all, past max_deliveries of 3): nothing is
    dead-lettered, and everything is delivered once analytics takes pushes again."""
    hostile.mode = "unavailable"
    add_events(redis_server.url, 20)
    sink = HttpSink(hostile.url, 0.5)
    fast = {
        "max_deliveries": 3,
        "claim_idle": 3.0,
        "push_timeout": 0.5,
        "redis_timeout": 0.5,
        "claim_interval": 0.2,
    }
    r = AsyncRedis.from_url(redis_server.url)

    async def abandon(owner: str) -> None:
        """What ``owner`` held is idle past claim_idle: the next forwarder takes it over."""
        rows: Any = await r.xrange(STREAM)
        ids = [i for i, _ in rows]
        await r.xclaim(STREAM, "forwarders", owner, 0, ids, idle=10_000, justid=True)

    async def drained(client: AsyncRedis) -> bool:
        return bool(await client.xlen(STREAM) == 0)

    try:
        for n in range(5):
            if n:
                await abandon(f"f{n - 1}")
            await _forward(redis_server, sink, _more_requests(hostile, 2), f"f{n}", **fast)
        assert await r.xlen(DLQ_STREAM) == 0
        pending = await r.xpending_range(STREAM, "forwarders", "-", "+", 100)
        assert len(pending) == 20
        assert max(int(p["times_delivered"]) for p in pending) <= 2
        hostile.mode = "garbage"  # a 200: accepted
        await abandon("f4")
        await _forward(redis_server, sink, drained, "last", **fast)
        assert await r.xlen(DLQ_STREAM) == 0
    finally:
        await sink.aclose()
        await r.aclose()
