"""The forwarder loop: read a batch, push it, ack what analytics accepted.

Never the same event in two forwarders at once: an entry belongs to the one
consumer that read or claimed it; while a batch waits for a retry its idle time
is refreshed (XCLAIM JUSTID) so no one takes it over, and pushes time out well
before ``claim_idle``. Nothing lost when a worker dies: its pending entries are
taken over by XAUTOCLAIM once idle for ``claim_idle``.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from trackrelay import streams
from trackrelay.control import backoff
from trackrelay.control.push_outcome import Outcome, PushResult, retry_wait
from trackrelay.forwarder.metrics import ForwarderMetrics
from trackrelay.identity import process_name
from trackrelay.settings import ForwarderSettings
from trackrelay.streams import DeadLetterEntry, Entry

log = logging.getLogger(__name__)


class Sink(Protocol):
    async def push(self, raw_events: list[bytes]) -> PushResult: ...


def undecodable(raw: bytes | None) -> str | None:
    """Why an entry cannot be sent at all, or None when it is a JSON object."""
    if raw is None:
        return "entry has no event field"
    try:
        value = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        return f"event is not JSON: {exc}"
    if not isinstance(value, dict):
        return "event is not a JSON object"
    return None


def triage(
    entries: Sequence[Entry], deliveries: dict[str, int], max_deliveries: int
) -> tuple[list[DeadLetterEntry], list[Entry]]:
    """Split a batch into dead letters (undecodable, or delivered too often) and the rest.

    ``deliveries`` holds counts for redelivered entries; an absent id counts as 1.
    """
    dead: list[DeadLetterEntry] = []
    sendable: list[Entry] = []
    for entry in entries:
        delivered = deliveries.get(entry.id, 1)
        problem = undecodable(entry.raw)
        if problem is None and delivered > max_deliveries:
            problem = f"delivered {delivered} times (max {max_deliveries})"
        if problem is None:
            sendable.append(entry)
        else:
            dead.append((entry, problem, delivered))
    return dead, sendable


class Forwarder:
    def __init__(
        self,
        redis: Redis,
        sink: Sink,
        settings: ForwarderSettings,
        *,
        consumer: str | None = None,
        metrics: ForwarderMetrics | None = None,
    ) -> None:
        self.redis = redis
        self.sink = sink
        self.settings = settings
        self.consumer = consumer or settings.consumer_name or process_name()
        self.metrics = metrics or ForwarderMetrics()

    async def run(self, stop: asyncio.Event) -> None:
        """Forward until ``stop`` is set; Redis outages are waited out, never fatal.

        First this consumer's own pending entries (one lane: they must not be read
        twice), then ``concurrency`` lanes read new entries, each its own batch,
        while one more task takes over what dead consumers left behind.
        """
        await self._resilient(stop, "start", self._start_step)
        log.info(
            "forwarder %s: %d lanes, batches of %d",
            self.consumer,
            self.settings.concurrency,
            self.settings.batch_size,
        )
        await asyncio.gather(
            self._resilient(stop, "housekeeping", self._housekeeping_step),
            *(
                self._resilient(stop, f"lane {n}", self._lane_step)
                for n in range(self.settings.concurrency)
            ),
        )

    async def _resilient(
        self, stop: asyncio.Event, name: str, step: Callable[[asyncio.Event], Awaitable[bool]]
    ) -> None:
        """Run ``step`` until it returns False or ``stop`` is set; back off on Redis errors."""
        failures = 0
        while not stop.is_set():
            try:
                if not await step(stop):
                    return
                failures = 0
            except ResponseError as exc:
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                # The stream or group vanished (Redis restarted empty, key deleted).
                log.warning("forwarder %s: consumer group missing; creating it", self.consumer)
                await streams.ensure_group(self.redis)
            except (RedisError, OSError) as exc:
                failures += 1
                self.metrics.failures.labels("redis").inc()
                wait = backoff.full_jitter(
                    failures, self.settings.backoff_base, self.settings.backoff_max
                )
                log.warning(
                    "forwarder %s: %s: redis unavailable (%s); retry in %.2fs",
                    self.consumer,
                    name,
                    exc,
                    wait,
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=wait)

    async def _start_step(self, stop: asyncio.Event) -> bool:
        """Create the group, then drain this consumer's own pending entries; False when done."""
        await streams.ensure_group(self.redis)
        entries = await streams.read(self.redis, self.consumer, "0", self.settings.batch_size, None)
        if not entries:
            return False
        await self.handle(entries, stop, redelivered=True)
        return True

    async def _lane_step(self, stop: asyncio.Event) -> bool:
        entries = await streams.read(
            self.redis, self.consumer, ">", self.settings.batch_size, self.settings.block_ms
        )
        if entries:
            await self.handle(entries, stop, redelivered=False)
        return True

    async def _housekeeping_step(self, stop: asyncio.Event) -> bool:
        """Refresh queue gauges; take over entries idle longer than ``claim_idle``."""
        await self._refresh_stats()
        while not stop.is_set() and await self._claim_abandoned(stop):
            pass
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.settings.claim_interval)
        return True

    async def _claim_abandoned(self, stop: asyncio.Event) -> bool:
        """Take over entries a dead consumer held; True when some were handled."""
        _, entries = await streams.autoclaim(
            self.redis, self.consumer, self.settings.claim_idle, self.settings.batch_size
        )
        if not entries:
            return False
        log.warning("forwarder %s: took over %d abandoned entries", self.consumer, len(entries))
        await self.handle(entries, stop, redelivered=True)
        return True

    async def handle(
        self, entries: Sequence[Entry], stop: asyncio.Event, redelivered: bool
    ) -> None:
        """Push ``entries``; retry until accepted, dead-lettered, or ``stop``."""
        counts = (
            await streams.deliveries(self.redis, self.consumer, [e.id for e in entries])
            if redelivered
            else {}
        )
        dead, sendable = triage(entries, counts, self.settings.max_deliveries)
        await self._dead_letter(dead)
        attempt = 0
        while sendable:
            sendable, result = await self._push_splitting(sendable, counts)
            if not sendable or result is None:
                return
            attempt += 1
            wait = retry_wait(
                backoff.full_jitter(attempt, self.settings.backoff_base, self.settings.backoff_max),
                result.retry_after,
                cap=self.settings.claim_idle / 3,
            )
            log.warning(
                "forwarder %s: push %s (%s); %d events retry #%d in %.2fs",
                self.consumer,
                result.outcome.value,
                result.detail,
                len(sendable),
                attempt,
                wait,
            )
            try:
                await asyncio.wait_for(stop.wait(), timeout=wait)
                return  # stopping: the entries stay pending for a later owner
            except TimeoutError:
                pass
            owned = await streams.refresh(self.redis, self.consumer, [e.id for e in sendable])
            sendable = [e for e in sendable if e.id in owned]

    async def _push_splitting(
        self, entries: list[Entry], counts: dict[str, int]
    ) -> tuple[list[Entry], PushResult | None]:
        """Push in order; a 400 splits the batch in halves until bad events stand alone.

        Returns the entries still to send and the failure that stopped us.
        """
        queue: deque[list[Entry]] = deque([entries])
        while queue:
            batch = queue.popleft()
            started = time.perf_counter()
            result = await self.sink.push([e.raw or b"" for e in batch])
            self.metrics.push_latency.observe(time.perf_counter() - started)
            if result.outcome is Outcome.ACCEPTED:
                await streams.ack_delete(self.redis, [e.id for e in batch])
                self.metrics.forwarded.inc(len(batch))
                self.metrics.batch_size.observe(len(batch))
                continue
            self.metrics.failures.labels(result.outcome.value).inc()
            if result.outcome is Outcome.REJECTED:
                if len(batch) == 1:
                    reason = f"rejected by analytics: {result.detail}"
                    await self._dead_letter([(batch[0], reason, counts.get(batch[0].id, 1))])
                else:
                    half = len(batch) // 2
                    queue.appendleft(batch[half:])
                    queue.appendleft(batch[:half])
                continue
            remaining = [e for b in [batch, *queue] for e in b]
            return remaining, result
        return [], None

    async def _dead_letter(self, dead: list[DeadLetterEntry]) -> None:
        if not dead:
            return
        await streams.dead_letter(self.redis, dead)
        self.metrics.dead_lettered.inc(len(dead))
        for entry, reason, _ in dead:
            log.error("forwarder %s: entry %s to the DLQ: %s", self.consumer, entry.id, reason)

    async def _refresh_stats(self) -> None:
        stats = await streams.queue_stats(self.redis)
        self.metrics.pending.set(stats.pending)
        self.metrics.stream_length.set(stats.length)
        self.metrics.dlq_size.set(stats.dlq)
