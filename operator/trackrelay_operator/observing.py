"""What a pipeline's controller observes through: its queue's Redis, analytics' probe, and
the Prometheus that holds analytics' metrics (``spec.analytics.prometheus``).

The Redis URL comes from the pipeline's Secret, read again on every tick: the
Secret may be rotated while the operator runs, and the client follows it
(closing the old one), so a tick always observes the queue the pipeline names
now. What is read from Redis is local mode's ``observe``.
"""

from __future__ import annotations

import asyncio

import httpx

from trackrelay.control.controller import Observation
from trackrelay.loop.observe import observe
from trackrelay.queue import client
from trackrelay.queue.client import Queue
from trackrelay_operator import destinations
from trackrelay_operator.destinations import DEFAULT_ALLOWED
from trackrelay_operator.kube import Kube
from trackrelay_operator.spec import Pipeline


class PipelineObserver:
    """One pipeline's connections: the Redis client (remade when its URL changes), HTTP."""

    def __init__(
        self, kube: Kube, namespace: str, allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.allowed_hosts = allowed_hosts
        self.url: str | None = None
        self.redis: Queue | None = None
        self.http = httpx.AsyncClient(timeout=2, follow_redirects=False)
        """For the analytics health probe (``spec.analytics.healthURL``) and Prometheus' queries
        (each within ``spec.analytics.prometheus.timeoutSeconds``). A redirect is not
        followed: it could lead off the allowed hosts."""

    async def connect(self, pipeline: Pipeline) -> Queue:
        """The client for the URL the pipeline's Secret holds now (``LookupError`` if missing)."""
        url = await asyncio.to_thread(
            self.kube.redis_url, self.namespace, pipeline.redis_secret, pipeline.redis_key
        )
        if url != self.url or self.redis is None:
            where = f"Secret {pipeline.redis_secret} key {pipeline.redis_key}"
            destinations.check([(where, url)], self.allowed_hosts)
            await self._close_redis()
            self.redis = client.connect(url, timeout=2)
            self.url = url
        return self.redis

    async def observe(self, pipeline: Pipeline) -> Observation:
        redis = await self.connect(pipeline)
        return await observe(
            redis, pipeline.queue_quota, pipeline.health_url, self.http, pipeline.prometheus
        )

    async def _close_redis(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
            self.redis = None

    async def aclose(self) -> None:
        await self.http.aclose()
        await self._close_redis()
