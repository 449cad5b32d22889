"""Run one forwarder process: Redis client, HTTP sink, metrics endpoint, signal handling."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from prometheus_client import start_http_server
from redis.asyncio import Redis

from trackrelay.forwarder.metrics import ForwarderMetrics
from trackrelay.forwarder.sink import HttpSink
from trackrelay.forwarder.worker import Forwarder
from trackrelay.local.signals import stop_on_signals
from trackrelay.settings import ForwarderSettings

log = logging.getLogger(__name__)


async def run_forwarder(settings: ForwarderSettings) -> int:
    if settings.redis_url is None:
        raise ValueError("a forwarder needs TRACKRELAY_REDIS_URL / --redis-url")
    if settings.analytics_url is None:
        raise ValueError("a forwarder needs TRACKRELAY_ANALYTICS_URL / --analytics-url")
    metrics = ForwarderMetrics()
    if settings.metrics_port is not None:
        start_http_server(settings.metrics_port, addr="127.0.0.1", registry=metrics.registry)
    redis = Redis.from_url(settings.redis_url, socket_connect_timeout=2)
    sink = HttpSink(settings.analytics_url, settings.push_timeout)
    forwarder = Forwarder(redis, sink, settings, metrics=metrics)
    log.info(
        "forwarder %s: %s -> %s", forwarder.consumer, settings.redis_url, settings.analytics_url
    )
    try:
        async with stop_on_signals() as stop:
            task = asyncio.create_task(forwarder.run(stop))
            stopped = asyncio.create_task(stop.wait())
            await asyncio.wait({task, stopped}, return_when=asyncio.FIRST_COMPLETED)
            if task.done():
                stopped.cancel()
                task.result()  # a crash of the loop is an error exit
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
        await sink.aclose()
        await redis.aclose()
    log.info("forwarder %s: stopped", forwarder.consumer)
    return 0
