"""Run trackrelay's parts on one machine: the order service, a relay, the whole stack.

Resolves the embedded defaults (a private Redis when no URL is given, a SQLite
file when no database URL is given) and stops what it started on exit.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import os
import threading
from collections.abc import Iterator

import uvicorn

from trackrelay.analytics_sim.app import create_app as create_sim_app
from trackrelay.config.settings import OrderSettings, SimulatorSettings
from trackrelay.db import engine as database
from trackrelay.db import startup
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role
from trackrelay.local.supervisor import Supervisor
from trackrelay.orders.app import create_app
from trackrelay.queue import client
from trackrelay.relay.relay import OutboxRelay
from trackrelay.runtime.redact import redact_url
from trackrelay.runtime.retry import until_up
from trackrelay.runtime.serve import serve_until_signal
from trackrelay.runtime.signals import stop_on_signals

log = logging.getLogger(__name__)


def redis_maxmemory(queue_quota: int | None) -> str | None:
    """The embedded Redis's ``maxmemory``: well above the queue quota, the last line of defence.

    Shedding keeps the queue's keys under the quota; Redis's own structures, the
    AOF rewrite buffer and client buffers need the rest. With ``noeviction`` a
    write past this is refused, never silently evicted.
    """
    if queue_quota is None:
        return None
    return str(queue_quota * 2 + 32 * 1024 * 1024)


@contextlib.contextmanager
def queue_redis(settings: OrderSettings) -> Iterator[str]:
    """The queue's Redis URL: the configured one, or an embedded server for this run."""
    if settings.redis_url is not None:
        yield settings.redis_url
        return
    server = EmbeddedRedis(
        settings.data_dir / "redis", maxmemory=redis_maxmemory(settings.queue_quota)
    )
    with server:
        log.info("embedded redis-server (%s) listening on %s", server.binary, server.url)
        yield server.url


async def prepare_store(
    settings: OrderSettings, redis_url: str | None, queue_required: bool = False
) -> OrderSettings:
    """Check the store (and queue) and migrate once, before serving; settings for the app.

    The order service starts without its queue (``queue_required`` False: orders never
    wait for it); a standalone relay does not.
    """
    url = settings.resolved_database_url()
    await until_up(
        functools.partial(startup.check_store, url), "the order database", settings.start_wait
    )
    if settings.migrate_on_start:
        await startup.migrate_store(url)
    if redis_url is not None:
        await client.check_queue(redis_url, required=queue_required)
    return settings.model_copy(update={"migrate_on_start": False})


def serve_orders_workers(settings: OrderSettings) -> int:
    """``orders --workers N``: N uvicorn worker processes, the relay in a process of its own.

    Blocking (uvicorn's supervisor owns the signals); the store is checked and
    migrated once here, before any worker starts.
    """
    with queue_redis(settings) as redis_url:
        relay_url = redis_url if settings.run_relay else None
        ready = asyncio.run(prepare_store(settings, relay_url))
        env = settings_env(ready, redis_url)
        os.environ.update(env)  # uvicorn's workers inherit it and build the app from it
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        supervisor = Supervisor()
        watching = threading.Event()
        watcher = None
        if relay_url is not None:
            log_file = settings.data_dir / "relay.log"
            relay = supervisor.start(
                "relay", lambda: spawn_role(["relay", "--no-migrate"], env, log_file)
            )
            assert relay.process is not None
            log.info("relay running as process %d (log %s)", relay.process.pid, log_file)
            watcher = threading.Thread(
                target=_supervise, args=(supervisor, watching), name="relay-supervisor"
            )
            watcher.start()
        try:
            uvicorn.run(
                "trackrelay.orders.asgi:create_from_env",
                factory=True,
                host=settings.host,
                port=settings.port,
                workers=settings.workers,
                log_level="info",
                access_log=False,
                timeout_graceful_shutdown=5,
            )
        finally:
            watching.set()
            if watcher is not None:
                watcher.join()
            supervisor.stop_all()
    return 0


def _supervise(supervisor: Supervisor, stopping: threading.Event) -> None:
    """Restart the relay child whenever it exits, until ``stopping`` (uvicorn owns the
    main thread and the signals, so this watches from a thread of its own)."""

    async def watch() -> None:
        while not stopping.is_set():
            for child in supervisor.check():
                await supervisor.relaunch(child)
            await asyncio.sleep(0.2)

    asyncio.run(watch())


def settings_env(settings: OrderSettings, redis_url: str | None) -> dict[str, str]:
    """``settings`` as the ``TRACKRELAY_*`` variables a child process reads back."""
    env = {
        f"TRACKRELAY_{name.upper()}": str(value)
        for name, value in settings.model_dump(mode="json").items()
        if value is not None
    }
    if redis_url is not None:
        env["TRACKRELAY_REDIS_URL"] = redis_url
    env["TRACKRELAY_DATABASE_URL"] = settings.database_url or settings.resolved_database_url()
    return env


async def serve_orders(settings: OrderSettings) -> int:
    with queue_redis(settings) as redis_url:
        relay_url = redis_url if settings.run_relay else None
        ready = await prepare_store(settings, relay_url)
        app = create_app(ready, redis_url=relay_url)
        await serve_until_signal(app, settings.host, settings.port, "info")
    return 0


async def run_relay(settings: OrderSettings, owner: str | None = None) -> int:
    """A standalone outbox relay (several may run against one database).

    It starts without its queue, as the order service does: while Redis is unreachable
    it keeps the outbox within its quota (a relay restarted during an outage that
    refused to start would leave the outbox unguarded) and retries Redis meanwhile."""
    if settings.redis_url is None:
        raise ValueError("a standalone relay needs TRACKRELAY_REDIS_URL / --redis-url")
    await prepare_store(settings, settings.redis_url, queue_required=False)
    url = settings.resolved_database_url()
    engine = database.make_engine(url)
    redis = client.connect(settings.redis_url)
    relay = OutboxRelay(engine, redis, settings, owner=owner, database_url=url)
    log.info(
        "relay %s: outbox %s -> %s",
        relay.owner,
        redact_url(url),
        redact_url(settings.redis_url),
    )
    try:
        async with stop_on_signals() as stop:
            await relay.run(stop)
    finally:
        await redis.aclose()
        await engine.dispose()
    return 0


async def serve_simulator(settings: SimulatorSettings) -> int:
    app = create_sim_app(settings)
    # A hanging request must not hold the simulator's shutdown for an hour.
    await serve_until_signal(app, settings.sim_host, settings.sim_port, "warning", grace=1)
    return 0
