"""Run trackrelay's parts on one machine: the order service, a relay, the whole stack.

Resolves the embedded defaults (a private Redis when no URL is given, a SQLite
file when no database URL is given) and stops what it started on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Iterator

import uvicorn
from redis.asyncio import Redis

from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.orders import migrate, store
from trackrelay.orders.app import create_app
from trackrelay.orders.relay import OutboxRelay
from trackrelay.settings import OrderSettings, StoreSettings

log = logging.getLogger(__name__)


@contextlib.contextmanager
def queue_redis(settings: StoreSettings) -> Iterator[str]:
    """The queue's Redis URL: the configured one, or an embedded server for this run."""
    if settings.redis_url is not None:
        yield settings.redis_url
        return
    server = EmbeddedRedis(settings.data_dir / "redis")
    with server:
        log.info("embedded redis-server (%s) listening on %s", server.binary, server.url)
        yield server.url


async def serve_orders(settings: OrderSettings) -> int:
    with queue_redis(settings) as redis_url:
        app = create_app(settings, redis_url=redis_url if settings.run_relay else None)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="info")
        await uvicorn.Server(config).serve()
    return 0


@contextlib.asynccontextmanager
async def stop_on_signals() -> AsyncIterator[asyncio.Event]:
    """An event set on SIGINT/SIGTERM."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        yield stop
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)


async def run_relay(settings: OrderSettings, owner: str | None = None) -> int:
    """A standalone outbox relay (several may run against one database)."""
    if settings.redis_url is None:
        raise ValueError("a standalone relay needs TRACKRELAY_REDIS_URL / --redis-url")
    url = settings.resolved_database_url()
    await asyncio.to_thread(migrate.upgrade, url)
    engine = store.make_engine(url)
    redis = Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
    relay = OutboxRelay(engine, redis, settings, owner=owner)
    log.info("relay %s: outbox %s -> %s", relay.owner, url.split("@")[-1], settings.redis_url)
    try:
        async with stop_on_signals() as stop:
            await relay.run(stop)
    finally:
        await redis.aclose()
        await engine.dispose()
    return 0


async def up(settings: OrderSettings, analytics_url: str | None, forwarders: int) -> int:
    """The whole stack on this machine (order service + relay for now)."""
    with queue_redis(settings) as redis_url:
        app = create_app(settings, redis_url=redis_url)
        config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level="warning")
        server = uvicorn.Server(config)
        print(f"trackrelay up: order API  http://{settings.host}:{settings.port}/v1/orders")
        print(f"trackrelay up: queue      {redis_url}")
        print(f"trackrelay up: store      {settings.resolved_database_url()}")
        await server.serve()
    return 0
