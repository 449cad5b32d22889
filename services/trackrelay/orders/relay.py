"""The outbox relay: moves outbox rows into the Redis Stream, then deletes them.

Claim a batch under a lease (``store.claim_outbox``), XADD it in one pipeline,
delete exactly the rows Redis accepted, release the rest. When Redis is down or
refuses writes (OOM at maxmemory), orders keep being accepted: the outbox grows
and the relay retries with exponential backoff and full jitter.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable

from redis.asyncio import Redis
from redis.exceptions import RedisError
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from trackrelay import streams
from trackrelay.control.lease import grant, still_held
from trackrelay.identity import process_name
from trackrelay.orders import store
from trackrelay.orders.metrics import OrderMetrics
from trackrelay.runtime.errors import brief
from trackrelay.runtime.retry import Backoff, pause
from trackrelay.settings import RelaySettings

log = logging.getLogger(__name__)


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: Redis,
        settings: RelaySettings,
        *,
        owner: str | None = None,
        metrics: OrderMetrics | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.engine = engine
        self.redis = redis
        self.settings = settings
        self.owner = owner or process_name()
        self.metrics = metrics
        self.clock = clock
        self.backoff = Backoff(settings.relay_backoff_base, settings.relay_backoff_max)

    async def run_once(self) -> int:
        """One claim-publish-delete round; returns how many events reached the stream."""
        lease = grant(self.owner, self.clock(), self.settings.relay_lease_seconds)
        rows = await store.claim_outbox(
            self.engine, lease, self.settings.relay_batch_size, self.clock()
        )
        if not rows:
            return 0
        if not still_held(lease, self.clock(), margin=1.0):
            # We were too slow (e.g. a stalled process): another relay may own these now.
            return 0
        try:
            results = await streams.publish(self.redis, [row.payload for row in rows])
        except RedisError:
            await store.release_claim(self.engine, lease.token)
            raise
        accepted = [
            r.id for r, res in zip(rows, results, strict=True) if not isinstance(res, Exception)
        ]
        refused = [res for res in results if isinstance(res, Exception)]
        await store.delete_published(self.engine, lease.token, accepted)
        if refused:
            await store.release_claim(self.engine, lease.token)
        if self.metrics is not None:
            self.metrics.relay_published.inc(len(accepted))
        if refused:
            raise refused[0]
        return len(accepted)

    async def refresh_stats(self) -> None:
        if self.metrics is None:
            return
        stats = await store.outbox_stats(self.engine)
        self.metrics.outbox_depth.set(stats.depth)
        self.metrics.relay_lag.set(stats.lag(self.clock()))

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; never raises for Redis or database trouble."""
        last_stats = 0.0
        while not stop.is_set():
            wait = self.settings.relay_idle_seconds
            try:
                moved = await self.run_once()
                self.backoff.succeeded()
                if moved >= self.settings.relay_batch_size:
                    wait = 0.0  # a full batch: more is waiting; otherwise let rows gather
            except (RedisError, OSError) as exc:
                wait = self._failed("redis", exc)
            except SQLAlchemyError as exc:
                wait = self._failed("database", exc)
            now = self.clock()
            if now - last_stats >= 1.0:
                last_stats = now
                with contextlib.suppress(SQLAlchemyError):
                    await self.refresh_stats()
            await pause(stop, wait)

    def _failed(self, component: str, exc: BaseException) -> float:
        if self.metrics is not None:
            self.metrics.relay_errors.labels(component).inc()
        wait = self.backoff.failed()
        log.warning(
            "relay: %s unavailable (%s); retry #%d in %.2fs",
            component,
            brief(exc),
            self.backoff.failures,
            wait,
        )
        return wait
