"""One forwarder process over every shard of the queue: a ``Forwarder`` per shard.

They share the process's pacer (one adaptive window, one breaker, one retry allowance,
the fleet-wide budget), what it learned of analytics (when it last accepted a push: the
evidence that a refused event is poison; the byte cap a 413 taught), its metrics and
its HTTP sink; each reads its shard through
the shard's consumer group under the process's one consumer name, so every guarantee
of one stream (one owner per entry, takeover of a dead consumer's entries) holds per
shard. Every process reads every shard: the consumer groups share each shard's entries
out among the processes, so N forwarders and M shards balance without leases, and a
forwarder that dies leaves only its pending entries, taken over after ``claim_idle``.
The lanes are spread over the shards (``concurrency`` in all, at least one a shard, as
the count was when each shard's reader started: a grown count adds readers, the window
still bounds what is in flight).

The queue's shard count is read from Redis (``queue.shards``) at start and every
``claim_interval`` after: a relay that raises it is followed without a restart.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time

from trackrelay.config.settings import ForwarderSettings
from trackrelay.forwarder.metrics import ForwarderMetrics
from trackrelay.forwarder.worker import Clock, Forwarder, Learned, Sink, make_pacer
from trackrelay.identity import process_name
from trackrelay.queue import shards
from trackrelay.queue.client import Queue, QueueError
from trackrelay.queue.keys import Shard, first_shards
from trackrelay.runtime.errors import brief
from trackrelay.runtime.retry import Backoff, pause

log = logging.getLogger(__name__)


def lanes_per_shard(concurrency: int, count: int) -> int:
    """Lanes each shard's reader gets: ``concurrency`` spread, at least one each."""
    return max(1, math.ceil(concurrency / count))


class ForwarderFleet:
    """Every shard's forwarder in one process, with what ``/healthz`` and ``/readyz`` read."""

    def __init__(
        self,
        redis: Queue,
        sink: Sink,
        settings: ForwarderSettings,
        *,
        consumer: str | None = None,
        metrics: ForwarderMetrics | None = None,
        clock: Clock = time.monotonic,
    ) -> None:
        self.redis = redis
        self.sink = sink
        self.settings = settings
        self.consumer = consumer or settings.consumer_name or process_name()
        self.metrics = metrics or ForwarderMetrics()
        self.clock = clock
        self.pacer = make_pacer(settings, redis, self.metrics, clock)
        self.learned = Learned(push_byte_cap=settings.max_batch_bytes)
        self.shards: list[Shard] = []
        self.members: list[Forwarder] = []

    @property
    def tasks_running(self) -> int:
        return sum(m.tasks_running for m in self.members)

    @property
    def tasks_expected(self) -> int:
        return sum(m.tasks_expected for m in self.members) if self.members else 1

    @property
    def redis_ok(self) -> bool:
        return bool(self.members) and all(m.redis_ok for m in self.members)

    def _member(self, shard: Shard, lanes: int) -> Forwarder:
        member = Forwarder(
            self.redis,
            self.sink,
            self.settings,
            consumer=self.consumer,
            metrics=self.metrics,
            clock=self.clock,
            shard=shard,
            pacer=self.pacer,
            learned=self.learned,
            lanes=lanes,
            publishes=shard.number == 0,
        )
        member.all_shards = self.shards
        return member

    async def _count(self, stop: asyncio.Event) -> int:
        """The queue's shard count (raised to ours first); Redis outages are waited out."""
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_max)
        while True:
            try:
                return await shards.record(self.redis, self.settings.queue_shards)
            except (*QueueError, OSError) as exc:
                wait = backoff.failed()
                log.warning(
                    "forwarder %s: reading the shard count: %s; retry in %.2fs",
                    self.consumer,
                    brief(exc),
                    wait,
                )
                if await pause(stop, wait):
                    return 0

    def _grow(self, count: int, group: asyncio.TaskGroup, stop: asyncio.Event) -> None:
        """Start a forwarder for every shard up to ``count`` not read yet."""
        if count <= len(self.shards):
            return
        if self.shards:
            log.warning(
                "forwarder %s: the queue has %d shards now (was %d)",
                self.consumer,
                count,
                len(self.shards),
            )
        lanes = lanes_per_shard(self.settings.concurrency, count)
        for shard in first_shards(count)[len(self.shards) :]:
            self.shards.append(shard)
            member = self._member(shard, lanes)
            self.members.append(member)
            group.create_task(member.run(stop), name=f"forwarder {shard.stream}")

    async def run(self, stop: asyncio.Event) -> None:
        """Forward every shard until ``stop``; a crash of any shard's tasks stops them all."""
        count = await self._count(stop)
        if not count:
            return
        async with asyncio.TaskGroup() as group:
            self._grow(count, group, stop)
            while not await pause(stop, self.settings.claim_interval):
                try:
                    self._grow(await shards.recorded(self.redis), group, stop)
                except (*QueueError, OSError):
                    pass  # the shards' own tasks name the outage
