"""The outbox relay: moves outbox rows into the Redis Stream, then deletes them.

Claim a batch under a lease (``outbox.claim_outbox``), XADD it in one pipeline,
delete exactly the rows Redis accepted, release the rest. When Redis is down or
refuses writes (OOM at maxmemory), orders keep being accepted: the outbox grows
and the relay retries with exponential backoff and full jitter.

With a queue quota the batch goes through the ingress shedding instead
(``relay.ingress``): sampled, folded into aggregates, or admitted within the
quota by one atomic script; with an outbox quota a guard keeps the outbox in
bounds on its own interval, Redis or not.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncEngine

from trackrelay.config.live import ConfigMapLive
from trackrelay.config.settings import MIN_SHARD_QUOTA, RelaySettings
from trackrelay.control.lease import grant, still_held
from trackrelay.events import shard_of
from trackrelay.identity import process_name
from trackrelay.queue import shards, streams, views
from trackrelay.queue.client import Queue, QueueError
from trackrelay.queue.keys import RELAY_STATS_PREFIX, Shard, first_shards
from trackrelay.queue.quota import QueueQuota
from trackrelay.queue.replicas import Replication
from trackrelay.relay import outbox
from trackrelay.relay.guard import OutboxGuard
from trackrelay.relay.ingress import Counts, ShardedIngress, StreamIngress
from trackrelay.relay.metrics import RelayMetrics
from trackrelay.relay.wakeup import Wakeup, listen
from trackrelay.runtime.errors import brief
from trackrelay.runtime.retry import Backoff, pause

log = logging.getLogger(__name__)

DATABASE_ERRORS = (SQLAlchemyError, OSError)
"""What a database call raises when the store is down: asyncpg refuses a connection with a
bare ``OSError`` that SQLAlchemy does not wrap. Redis' errors are all ``QueueError``s, so
they are told apart by catching those first."""

VIEW_TTL = 5.0
"""Seconds a relay's published view outlives its last refresh (refreshed every second)."""
FLUSH_EVERY = 0.25
"""Seconds between looks for aggregation windows to flush."""
LEASE_MARGIN = 1.0
"""Seconds before its lease ends that a relay stops acting on its rows (publishing,
folding): room for clocks a little apart and the time a write takes."""
FULL_WAIT = 0.1
"""Seconds between attempts while the queue is at its quota (forwarders are making room)."""
GATHER = 0.005
"""Fewest seconds a relay woken by a commit lets others gather before it claims."""
GATHER_MAX = 0.025
"""Most seconds it lets them gather."""
GATHER_PER_COMMIT_RATE = 0.025 / 1000
"""Seconds of gathering per commit/s arriving: 5 ms at 200 orders/s, 25 ms from 1,000."""


def gather_seconds(commits_per_second: float) -> float:
    """How long a woken relay lets commits gather before its next round. A round costs
    about the same whatever it moves (a claim, a script, a delete, each a round trip and
    CPU on the process it shares), so under a light load it gathers little (events reach
    the stream within milliseconds, and the CPU is idle anyway), and the faster orders
    arrive, the longer it gathers: each round then moves more orders' rows, and the
    rounds per second stay bounded (about 40 at most) rather than one every GATHER."""
    return min(GATHER_MAX, max(GATHER, commits_per_second * GATHER_PER_COMMIT_RATE))


class OutboxRelay:
    def __init__(
        self,
        engine: AsyncEngine,
        redis: Queue,
        settings: RelaySettings,
        *,
        owner: str | None = None,
        metrics: RelayMetrics | None = None,
        clock: Callable[[], float] = time.time,
        database_url: str | None = None,
    ) -> None:
        """``database_url``: on PostgreSQL, where to LISTEN for commits (``relay.wakeup``);
        without it the relay polls every ``relay_idle_seconds``."""
        self.engine = engine
        self.database_url = database_url
        self.wakeup = Wakeup()
        """Set by a commit: the order route in this process, or a PostgreSQL notification."""
        self.redis = redis
        self.settings = settings
        self.owner = owner or process_name()
        self.metrics = metrics
        self.clock = clock
        self.backoff = Backoff(settings.relay_backoff_base, settings.relay_backoff_max)
        self.counts = Counts()
        self._reported = Counts()
        self.full = False
        """The last batch left rows in the outbox: the queue is at its quota."""
        self.replication = Replication(
            settings.queue_replicas,
            settings.queue_replica_timeout,
            max(settings.queue_replica_wait_max, settings.queue_replica_timeout),
        )
        self.shards: list[Shard] | None = None
        """The queue's shards, as the queue records them (learnt at the first round)."""
        self.ingress: ShardedIngress | None = None
        self._live = (
            ConfigMapLive(settings.live_configmap).start()
            if settings.live_configmap and settings.queue_quota is not None
            else None
        )
        self.guard: OutboxGuard | None = None
        if settings.outbox_quota is not None:
            self.guard = OutboxGuard(engine, settings, self.counts)

    async def learn_shards(self) -> list[Shard]:
        """Raise the queue's shard count to ours, read the count in force; on a change,
        route to the new shards (with a quota, each shard gets its share of it)."""
        count = await shards.record(self.redis, self.settings.queue_shards)
        if self.shards is not None and len(self.shards) == count:
            return self.shards
        if self.shards is not None:
            log.warning("relay: the queue has %d shards now (was %d)", count, len(self.shards))
        self.shards = first_shards(count)
        quota = self.settings.queue_quota
        if quota is not None:
            share = quota // count
            if share < MIN_SHARD_QUOTA:
                log.error(
                    "relay: a queue quota of %d bytes over %d shards leaves each less than "
                    "%d; each gets that much (%d bytes in all)",
                    quota,
                    count,
                    MIN_SHARD_QUOTA,
                    MIN_SHARD_QUOTA * count,
                )
                share = MIN_SHARD_QUOTA
            parts = [
                StreamIngress(
                    self.engine,
                    QueueQuota(
                        self.redis,
                        share,
                        shard=shard,
                        replication=self.replication,
                        sample_interval=self.settings.quota_sample_interval,
                        read_ahead=self.settings.queue_read_ahead // count,
                    ),
                    self.settings,
                    self.counts,
                    self._live,
                    flush_lag=max(1, self.settings.aggregate_flush_lag // count),
                )
                for shard in self.shards
            ]
            self.ingress = ShardedIngress(parts)
        return self.shards

    async def _publish(self, shard_list: list[Shard], rows: list[outbox.OutboxRow]) -> list[Any]:
        """XADD each row's payload to its shard's stream; per row, the id or the exception.
        A shard that fails (its node down) fails its own rows alone: the other shards'
        rows are deleted, not added again at each retry while it fails over."""
        if len(shard_list) == 1:
            payloads = [r.payload for r in rows]
            return await streams.publish(self.redis, shard_list[0], payloads, self.replication)
        split: list[list[int]] = [[] for _ in shard_list]
        for i, row in enumerate(rows):
            split[shard_of(row.event_id, len(shard_list))].append(i)
        replies = await asyncio.gather(
            *(
                streams.publish(
                    self.redis, shard, [rows[i].payload for i in mine], self.replication
                )
                for shard, mine in zip(shard_list, split, strict=True)
            ),
            return_exceptions=True,
        )
        results: list[Any] = [None] * len(rows)
        for mine, reply in zip(split, replies, strict=True):
            if isinstance(reply, BaseException):
                if not isinstance(reply, QueueError):
                    raise reply
                reply = [reply] * len(mine)
            for i, res in zip(mine, reply, strict=True):
                results[i] = res
        return results

    async def run_once(self) -> int:
        """One claim-publish-delete round; returns how many events reached the stream."""
        shard_list = self.shards or await self.learn_shards()
        lease = grant(self.owner, self.clock(), self.settings.relay_lease_seconds)
        rows = await outbox.claim_outbox(
            self.engine, lease, self.settings.relay_batch_size, self.clock()
        )
        if not rows:
            return 0
        if not still_held(lease, self.clock(), margin=LEASE_MARGIN):
            # We were too slow (e.g. a stalled process): another relay may own these now.
            return 0
        if self.ingress is not None:
            # Folds are fenced a margin before the lease ends, by Redis' clock: a relay
            # that stalls past it cannot count rows another relay may have counted.
            deadline = lease.expires_at - LEASE_MARGIN
            return await self._through_ingress(self.ingress, rows, lease.token, deadline)
        try:
            results = await self._publish(shard_list, rows)
        except QueueError:
            await outbox.release_claim(self.engine, lease.token)
            raise
        accepted = [
            r.id for r, res in zip(rows, results, strict=True) if not isinstance(res, Exception)
        ]
        refused = [res for res in results if isinstance(res, Exception)]
        await outbox.delete_published(self.engine, lease.token, accepted)
        if refused:
            await outbox.release_claim(self.engine, lease.token)
        if self.metrics is not None:
            self.metrics.relay_published.inc(len(accepted))
            self._moved(
                [r for r, res in zip(rows, results, strict=True) if not isinstance(res, Exception)]
            )
        if refused:
            raise refused[0]
        return len(accepted)

    async def _through_ingress(
        self, ingress: ShardedIngress, rows: list[outbox.OutboxRow], token: str, deadline: float
    ) -> int:
        try:
            outcome = await ingress.relay(rows, token, deadline)
        except BaseException:
            await outbox.release_claim(self.engine, token)  # a failure half way: free the rest
            raise
        if outcome.held:
            await outbox.release_claim(self.engine, token)  # held back: any relay may retry
        if outcome.held and not self.full:
            log.warning(
                "relay: the queue is at its quota (%d of %d bytes); events wait in the outbox",
                ingress.used,
                ingress.quota,
            )
        self.full = outcome.held
        if self.metrics is not None:
            self.metrics.relay_published.inc(outcome.queued)
            if not outcome.held:
                self._moved(rows)
        return outcome.queued

    def _moved(self, rows: list[outbox.OutboxRow]) -> None:
        assert self.metrics is not None
        now = self.clock()
        for row in rows:
            self.metrics.relay_delay.observe(now - row.created_at)

    def view(self) -> dict[str, Any]:
        """What this relay publishes for status lines and the controller."""
        out: dict[str, Any] = {"at": time.time(), "shed": self.counts.as_dict(), "full": self.full}
        if self.ingress is not None:
            out |= {
                "policy": self.ingress.shedding.policy.value,
                "p": self.ingress.shedding.p,
                "queue_bytes": self.ingress.used,
                "queue_quota": self.ingress.quota,
            }
        if self.guard is not None:
            out |= self.guard.view()
        if self.replication.replicas:
            out["replicas"] = {
                "wanted": self.replication.replicas,
                "confirmed": self.replication.confirmed,
                "unconfirmed": self.replication.unconfirmed,
                "waited_s": round(self.replication.waited, 3),
            }
        return out

    async def refresh_stats(self) -> None:
        with contextlib.suppress(*QueueError, OSError):
            await self.learn_shards()
        if self.ingress is not None:
            with contextlib.suppress(*QueueError, OSError):
                await self.ingress.refresh()
        if self.ingress is not None or self.guard is not None:
            with contextlib.suppress(*QueueError, OSError):
                await views.publish_stats(
                    self.redis, self.owner, self.view(), VIEW_TTL, prefix=RELAY_STATS_PREFIX
                )
        if self.metrics is None:
            return
        for key, n in self.counts.items():
            if n > self._reported[key]:
                self.metrics.shed.labels(*key).inc(n - self._reported[key])
                self._reported[key] = n
        if self.ingress is not None:
            self.metrics.queue_bytes.set(self.ingress.used)
            self.metrics.queue_quota.set(self.ingress.quota)
            self.metrics.keep_probability.set(self.ingress.shedding.p)
        stats = await outbox.outbox_stats(self.engine)
        self.metrics.outbox_depth.set(stats.depth)
        self.metrics.relay_lag.set(stats.lag(self.clock()))

    async def guard_outbox(self, stop: asyncio.Event) -> None:
        """Keep the outbox within its quota until ``stop``; the database is all it needs."""
        assert self.guard is not None
        while not stop.is_set():
            try:
                await self.guard.check(self.clock())
            except DATABASE_ERRORS as exc:
                log.warning("relay: outbox check failed (%s)", brief(exc))
            await pause(stop, self.settings.outbox_check_interval)

    async def run(self, stop: asyncio.Event) -> None:
        """Relay until ``stop`` is set; never raises for Redis or database trouble."""
        helpers = []
        if self.guard is not None:
            helpers.append(asyncio.create_task(self.guard_outbox(stop), name="outbox-guard"))
        url = self.database_url
        if self.settings.relay_wakeups and url is not None and url.startswith("postgresql"):
            listening = listen(url, self.wakeup, stop)
            helpers.append(asyncio.create_task(listening, name="outbox-listen"))
        try:
            await self._relay_loop(stop)
        finally:
            for helper in helpers:
                await helper
            await self.replication.aclose()

    async def _relay_loop(self, stop: asyncio.Event) -> None:
        last_stats = last_flush = 0.0
        last_start = self.clock()
        while not stop.is_set():
            wait = self.wakeup.poll_every(self.settings.relay_idle_seconds)
            idle = True
            start = self.clock()
            # This round sees the rows of every commit before it; how fast they came
            # since the last round sets how long the next one gathers.
            rate = self.wakeup.clear() / max(start - last_start, 1e-3)
            last_start = start
            try:
                moved = await self.run_once()
                if self.ingress is not None and self.clock() - last_flush >= FLUSH_EVERY:
                    last_flush = self.clock()
                    await self.ingress.flush_due()
                self.backoff.succeeded()
                if self.full:
                    wait, idle = max(wait, FULL_WAIT), False
                elif moved >= self.settings.relay_batch_size:
                    wait = 0.0  # a full batch: more is waiting
            except QueueError as exc:
                wait, idle = self._failed("redis", exc), False
            except DATABASE_ERRORS as exc:
                wait, idle = self._failed("database", exc), False
            now = self.clock()
            if now - last_stats >= 1.0:
                last_stats = now
                # A store that is down was named by the round above; statistics wait for it.
                with contextlib.suppress(*QueueError, *DATABASE_ERRORS):
                    await self.refresh_stats()
            if not idle:
                await pause(stop, wait)  # a commit changes nothing here: wait it out
            elif wait > 0:
                await self.wakeup.wait(stop, wait)
                # A commit woke it, or the poll: let others gather.
                await pause(stop, gather_seconds(rate))

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
