"""Run one forwarder process: Redis client, HTTP sink, health/metrics endpoint, signals."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from trackrelay.config.settings import ForwarderSettings
from trackrelay.forwarder.fleet import ForwarderFleet
from trackrelay.forwarder.health import create_health_app
from trackrelay.forwarder.metrics import ForwarderMetrics
from trackrelay.forwarder.sink import HttpSink
from trackrelay.queue import client
from trackrelay.runtime.redact import redact_url
from trackrelay.runtime.retry import until_up
from trackrelay.runtime.serve import make_server
from trackrelay.runtime.signals import stop_on_signals

log = logging.getLogger(__name__)


async def run_forwarder(settings: ForwarderSettings) -> int:
    """Forward until SIGTERM (exit 0) or a crash of any task (exit 1, one log line)."""
    if settings.redis_url is None:
        raise ValueError("a forwarder needs TRACKRELAY_REDIS_URL / --redis-url")
    if settings.analytics_url is None:
        raise ValueError("a forwarder needs TRACKRELAY_ANALYTICS_URL / --analytics-url")
    # Start needs the queue (a supervisor restarts us); once running, outages are ridden out.
    url = settings.redis_url
    await until_up(
        lambda: client.check_queue(url, required=True), "the queue redis", settings.start_wait
    )
    redis = client.connect(settings.redis_url, settings.redis_timeout)
    sink = HttpSink(settings.analytics_url, settings.push_timeout)
    forwarder = ForwarderFleet(redis, sink, settings, metrics=ForwarderMetrics())
    log.info(
        "forwarder %s: %s -> %s",
        forwarder.consumer,
        redact_url(settings.redis_url),
        redact_url(settings.analytics_url),
    )
    server = None
    serving: asyncio.Task[None] | None = None
    try:
        if settings.metrics_port is not None:
            server = make_server(
                create_health_app(forwarder), settings.host, settings.metrics_port, "warning"
            )
            serving = asyncio.create_task(server.serve())
        async with stop_on_signals() as stop:
            task = asyncio.create_task(forwarder.run(stop))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                stopped.cancel()
                crash = task.exception()
                if crash is not None:
                    log.critical("forwarder %s: stopping: %s", forwarder.consumer, _describe(crash))
                    return 1
                return 0
            try:
                await asyncio.wait_for(task, timeout=settings.shutdown_grace)
            except TimeoutError:
                log.warning(
                    "forwarder %s: abandoned in-flight push at shutdown; its entries "
                    "stay pending and will be claimed",
                    forwarder.consumer,
                )
            with contextlib.suppress(asyncio.CancelledError):
                await task
    finally:
        if server is not None and serving is not None:
            server.should_exit = True
            with contextlib.suppress(Exception, SystemExit):
                await serving
        await sink.aclose()
        await redis.aclose()
    log.info("forwarder %s: stopped", forwarder.consumer)
    return 0


def _describe(exc: BaseException) -> str:
    """One line for a crash, unwrapping the TaskGroup's exception group."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    notes = "; ".join(getattr(exc, "__notes__", []))
    where = f" ({notes})" if notes else ""
    return f"a task crashed{where}: {type(exc).__name__}: {exc}"
