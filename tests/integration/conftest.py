"""Helpers for the integration suites: bulk orders, stream reads, relay processes."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.redis_cluster import LocalRedisCluster, QueueServer, sync_client
from trackrelay.events import Event, shard_of
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.orders import store
from trackrelay.orders.models import OrderRequest
from trackrelay.queue.keys import EVENT_FIELD, SHARDS_KEY, STREAM, Shard, first_shards
from trackrelay.relay import outbox
from trackrelay.runtime.ports import free_port


async def insert_orders(
    engine: AsyncEngine, count: int, lines: int = 2, concurrency: int = 16
) -> set[str]:
    """Store ``count`` orders of ``lines`` lines; returns every event id they produced."""
    ids: set[str] = set()
    sem = asyncio.Semaphore(concurrency)

    async def one(n: int) -> None:
        req = OrderRequest.model_validate(
            {
                "customer_id": f"c{n}",
                "items": [
                    {"sku": f"sku-{(n + k) % 50}", "qty": 1 + k, "price": 100} for k in range(lines)
                ],
            }
        )
        async with sem:
            result = await store.create_order(engine, req, None)
        ids.update(f"{result.order.order_id}:{k}" for k in range(lines))

    await asyncio.gather(*(one(n) for n in range(count)))
    return ids


async def stream_event_ids(redis: Redis) -> list[str]:
    """Every event id in the stream, in stream order (duplicates kept)."""
    out: list[str] = []
    last = "-"
    while True:
        batch: Any = await redis.xrange(STREAM, min=last, count=5000)
        if last != "-":
            batch = batch[1:]
        if not batch:
            return out
        out.extend(Event.from_json(fields[EVENT_FIELD.encode()]).event_id for _, fields in batch)
        last = batch[-1][0].decode()


async def wait_until_drained(engine: AsyncEngine, timeout: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while (stats := await outbox.outbox_stats(engine)).depth:
        if loop.time() > deadline:
            raise AssertionError(f"outbox still holds {stats.depth} rows after {timeout}s")
        await asyncio.sleep(0.1)


def poll_until(cond: Callable[[], bool], timeout: float, every: float = 0.02) -> bool:
    """Whether ``cond`` became true within ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(every)
    return bool(cond())


def wait_for(
    cond: Callable[[], bool],
    timeout: float,
    what: str,
    show: Callable[[], str] | None = None,
) -> None:
    """Fail the test unless ``cond`` becomes true within ``timeout`` seconds.

    ``show`` adds what was seen instead to the failure message.
    """
    if not poll_until(cond, timeout, every=0.05):
        seen = f" (saw {show()})" if show is not None else ""
        raise AssertionError(f"timed out after {timeout}s waiting for {what}{seen}")


def run_cli(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """Run ``trackrelay ARGS`` to completion, capturing its output."""
    return subprocess.run(
        [sys.executable, "-m", "trackrelay.cli", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


class Sim:
    def __init__(self, url: str, proc: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.proc = proc

    def call(self, path: str, body: dict[str, Any] | None = None) -> Any:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            self.url + path, data=data, headers={"content-type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=5) as r:
            return json.loads(r.read())

    def state(self) -> dict[str, Any]:
        return self.call("/admin/state")  # type: ignore[no-any-return]

    def fault(self, **fault: Any) -> None:
        self.call("/admin/fault", fault)


@pytest.fixture(params=["standalone"])
def queue_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[QueueServer]:
    """The queue's Redis: one (``standalone``, as ``redis_server``), or a Redis Cluster of
    three primaries (``cluster``); a test asks for both with ``indirect`` parameters."""
    server: QueueServer
    if request.param == "cluster":
        server = LocalRedisCluster(tmp_path / "cluster")
    else:
        server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    with server:
        yield server


@pytest.fixture
def start_sim(tmp_path: Path) -> Iterator[Callable[..., Sim]]:
    procs: list[subprocess.Popen[bytes]] = []

    def start(*args: str, port: int | None = None) -> Sim:
        port = port or free_port()
        proc = spawn_role(["analytics-sim", "--port", str(port), *args], {}, tmp_path / "sim.log")
        procs.append(proc)
        url = f"http://127.0.0.1:{port}"
        wait_http(url + "/healthz", 30, proc)
        return Sim(url, proc)

    yield start
    stop_all(procs)


def add_events(
    url: str, count: int, poison_at: int | None = None, prefix: str = "o", shards: int = 1
) -> set[str]:
    """``count`` one-line orders' events, each in its order's shard of a queue of ``shards``
    (recorded, as a relay would)."""
    ids = set()
    with sync_client(url) as r:
        if shards > 1:
            r.set(SHARDS_KEY, shards)
        pipe = r.pipeline(transaction=False)
        for n in range(count):
            ev = Event(
                f"{prefix}{n}:0",
                f"{prefix}{n}",
                f"sku-{n % 20}",
                -1 if n == poison_at else 1,
                1.0,
                "2026-01-01T00:00:00.000Z",
            )
            stream = Shard(shard_of(ev.event_id, shards)).stream
            pipe.xadd(stream, {EVENT_FIELD: ev.to_json()})
            ids.add(ev.event_id)
        pipe.execute()
    return ids


def fwd_env(server: QueueServer, sim: Sim, **extra: str) -> dict[str, str]:
    return {"TRACKRELAY_REDIS_URL": server.url, "TRACKRELAY_ANALYTICS_URL": sim.url, **extra}


def queue_empty(server: QueueServer, shards: int = 1) -> bool:
    with sync_client(server.url) as r:
        for shard in first_shards(shards):
            pending = r.xpending(shard.stream, "forwarders")["pending"]
            if int(r.xlen(shard.stream)) or int(pending):
                return False
    return True


def stream_event_ids_sync(url: str) -> list[str]:
    """Every event id in the stream (blocking client), in stream order."""
    with sync_client(url) as r:
        rows: Any = r.xrange(STREAM)
    return [Event.from_json(fields[EVENT_FIELD.encode()]).event_id for _, fields in rows]


FAST_FORWARDER = {"backoff_base": 0.01, "backoff_max": 0.05, "block_ms": 50, "split_after": 2}
"""Settings for in-process forwarders in tests: short backoffs, short blocking reads."""


async def run_forwarder(
    server: EmbeddedRedis,
    sink: Any,
    until: Callable[[Redis], Awaitable[bool]],
    consumer: str = "solo",
    **settings: Any,
) -> tuple[Any, Redis]:
    """Run an in-process forwarder until ``until(redis)`` is true (20 s at most), stop it;
    the forwarder and a Redis client the caller closes."""
    from trackrelay.config.settings import ForwarderSettings
    from trackrelay.forwarder.worker import Forwarder

    r = Redis.from_url(server.url)
    fwd = Forwarder(r, sink, ForwarderSettings(**{**FAST_FORWARDER, **settings}), consumer=consumer)
    stop = asyncio.Event()
    task = asyncio.create_task(fwd.run(stop))
    try:
        deadline = time.monotonic() + 20
        while not await until(r):
            assert time.monotonic() < deadline, "condition not met in 20 s"
            assert not task.done(), task.exception()
            await asyncio.sleep(0.05)
    finally:
        stop.set()
        await task
    return fwd, r
