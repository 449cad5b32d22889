"""The forwarder loop: read a batch, push it, ack what analytics accepted.

Never one event in two forwarders' pushes at once
-------------------------------------------------
An entry belongs to the consumer that last read or claimed it (its owner in the
group's pending list). Every push is preceded by an *ownership check* that also
renews the entries' idle time: the XREADGROUP or XAUTOCLAIM that handed them
over, or ``streams.refresh_owned``, an atomic script that keeps only the
entries this consumer still owns and resets their idle time. Entries another
forwarder took over are dropped from the in-memory batch without being pushed
(``trackrelay_events_lost_ownership_total``).

Let ``t`` be the moment (our monotonic clock) just *before* the check is sent.
Redis renews the idle time after ``t``, so no other forwarder can claim these
entries before ``t + claim_idle``. The push gets the deadline ``t +
push_timeout``, enforced twice (``forwarder/sink.py``): ``asyncio.timeout_at``
ends the request, and every socket write first checks the clock, so no byte of
the request leaves after the deadline. A stall (SIGSTOP, a long GC, a swapped
process) anywhere between the check and the send is therefore harmless: on
waking, either a suspension point delivers the overdue timeout, or the write
guard refuses to send; and a request cut off mid-way is incomplete, which
analytics cannot process. The whole request is written before ``t +
push_timeout < t + claim_idle``, before anyone else may claim its entries, and
every later push re-checks first. What remains outside our control is
analytics itself: it must answer (or drop) a request within ``claim_idle -
push_timeout`` of receiving it (25 s by default), or a takeover's push could
meet a request it is still working on. The one window no client can close
is the few instructions between the write guard's clock read and the
``send`` system call; a stall has to land exactly there.

Liveness: a batch waiting to be retried renews its ownership every
``claim_idle / 4``; pushes end within ``push_timeout`` and the Redis writes
after them within ``redis_timeout``. ``ForwarderSettings`` refuses settings
where that sum (``max_hold_gap``) reaches ``claim_idle``, so a live forwarder
never loses a batch it still works on.

Nothing lost when a worker dies: its pending entries are taken over by
XAUTOCLAIM once idle for ``claim_idle``, scanning the whole pending list with
Redis's cursor. Delivery is at least once: a takeover re-sends what a dead
forwarder may have delivered, with the same event ids.

Poison events (``control/poison.py``): a batch analytics refuses is split until
the bad event stands alone, then dead-lettered with the status and reason.

Pace (``forwarder/pacer.py``): a lane takes a share of the adaptive window
before it reads, every push asks the circuit breaker first (and becomes a
one-event probe while analytics is down), retries spend the retry allowance, and
every push takes its events from the budget shared by all replicas. Waiting for
any of these counts as time between check and push, so ownership is checked
again after it.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, assert_never

import orjson

from trackrelay.config.live import ConfigMapLive
from trackrelay.config.settings import ForwarderSettings
from trackrelay.control.poison import (
    AfterPush,
    DeadLetter,
    Delivered,
    FailureHistory,
    Resend,
    RetryAfter,
    Split,
    after_push,
    lowered_byte_cap,
    split_to_byte_cap,
)
from trackrelay.control.push_outcome import Outcome, PushResult, retry_wait
from trackrelay.forwarder.metrics import ForwarderMetrics
from trackrelay.forwarder.pacer import Gate, Pacer
from trackrelay.identity import process_name
from trackrelay.queue import streams, views
from trackrelay.queue.client import Queue, QueueError, QueueFullError, QueueReplyError, redis_full
from trackrelay.queue.keys import SHARD0, Shard
from trackrelay.queue.streams import DeadLetterEntry, Entry
from trackrelay.runtime.errors import brief
from trackrelay.runtime.retry import Backoff, pause

log = logging.getLogger(__name__)

Clock = Callable[[], float]

SHARD_IDLE = 0.02
"""Seconds a reader of one of several shards waits after finding its shard empty."""


class Sink(Protocol):
    async def push(self, raw_events: list[bytes], deadline: float | None = None) -> PushResult: ...


def undecodable(raw: bytes | None) -> str | None:
    """Why an entry cannot be sent at all, or None when it is a JSON object."""
    if raw is None:
        return "entry has no event field"
    try:
        value = orjson.loads(raw)  # every event of every batch: stdlib json was 18 % of a forwarder
    except orjson.JSONDecodeError as exc:
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


@dataclass(slots=True)
class Held:
    """A batch this forwarder holds, with its failure history."""

    entries: list[Entry]
    history: FailureHistory = field(default_factory=FailureHistory)
    attempts: int = 0
    """Pushes of these entries so far (a later push is a retry)."""

    @property
    def size(self) -> int:
        return sum(wire_size(e) for e in self.entries)


def wire_size(entry: Entry) -> int:
    """Bytes an entry adds to a push body: its JSON and a separating comma."""
    return len(entry.raw or b"") + 1


@dataclass(frozen=True, slots=True)
class Released:
    """Nothing of the batch is left to push here: taken over, or the forwarder stops."""

    gated: bool = False
    """The attempt had passed the breaker's gate: a probe it may hold now never goes out
    (abandoning one when none is held does nothing)."""


@dataclass(frozen=True, slots=True)
class Refit:
    """The head batch was cut to what one push may carry; the ownership check holds."""

    checked_at: float


@dataclass(frozen=True, slots=True)
class HeadTakenOver:
    """The head batch was taken over while it waited for its budget slot; the rest
    was checked at ``checked_at``."""

    checked_at: float


@dataclass(frozen=True, slots=True)
class BreakerOpen:
    """The circuit breaker holds pushes back for ``wait`` seconds."""

    wait: float


@dataclass(frozen=True, slots=True)
class RetryDenied:
    """The retry allowance is spent: back off before this retry."""


Attempt = Released | Refit | HeadTakenOver | BreakerOpen | RetryDenied | AfterPush
"""What one attempt at the head batch came to: stopped before a push, or its answer."""


SLOT_RECHECK = 1.0
"""Seconds between looks at the budget while a lane waits for its slot: a raised budget
takes effect within this time, however long the slot given at the old one was."""


@dataclass(slots=True)
class Learned:
    """What a forwarder process learns of analytics, whichever shard's push taught it."""

    last_accepted_at: float | None = None
    """When analytics last accepted a push from this process (evidence against poison)."""
    push_byte_cap: int | None = None
    """The most bytes one push may carry (lowered by a 413)."""
    last_failure: str | None = None
    """Why the last push analytics did not accept failed (published in the view)."""


def make_pacer(
    settings: ForwarderSettings, redis: Queue, metrics: ForwarderMetrics, clock: Clock
) -> Pacer:
    """A process's pacer, following the operator's ConfigMap when one is named."""
    live = ConfigMapLive(settings.live_configmap).start() if settings.live_configmap else None
    return Pacer(settings, redis, metrics, clock, live=live)


class Forwarder:
    def __init__(
        self,
        redis: Queue,
        sink: Sink,
        settings: ForwarderSettings,
        *,
        consumer: str | None = None,
        metrics: ForwarderMetrics | None = None,
        clock: Clock = time.monotonic,
        shard: Shard = SHARD0,
        pacer: Pacer | None = None,
        learned: Learned | None = None,
        lanes: int | None = None,
        publishes: bool = True,
    ) -> None:
        """``shard``: the shard of the queue this one reads; in a sharded queue a process
        runs one per shard (``forwarder.fleet``), sharing ``pacer`` (the window, the
        breaker, the budget) and what they ``learned`` of analytics, with ``lanes``
        each, and one of them ``publishes`` the process's view and the queue's figures
        summed over ``all_shards``."""
        self.redis = redis
        self.shard = shard
        self.all_shards: list[Shard] = [shard]
        """The shards the queue's figures are summed over (kept current by the fleet)."""
        self.lanes = lanes or settings.concurrency
        self.publishes = publishes
        self.sink = sink
        self.settings = settings
        self.consumer = consumer or settings.consumer_name or process_name()
        self.metrics = metrics or ForwarderMetrics()
        self.clock = clock
        self.pacer = pacer or make_pacer(settings, redis, self.metrics, clock)
        self.learned = learned or Learned(push_byte_cap=settings.max_batch_bytes)
        self.redis_ok = False
        self.redis_full = False
        """The queue's Redis is at its ``maxmemory`` (seen by housekeeping or a refusal)."""
        self.tasks_running = 0
        self._claim_cursor = "0-0"
        self._group: asyncio.TaskGroup | None = None
        self._claims: set[asyncio.Task[None]] = set()

    @property
    def last_accepted_at(self) -> float | None:
        return self.learned.last_accepted_at

    @last_accepted_at.setter
    def last_accepted_at(self, value: float | None) -> None:
        self.learned.last_accepted_at = value

    @property
    def push_byte_cap(self) -> int | None:
        return self.learned.push_byte_cap

    @push_byte_cap.setter
    def push_byte_cap(self, value: int | None) -> None:
        self.learned.push_byte_cap = value

    @property
    def last_failure(self) -> str | None:
        return self.learned.last_failure

    @last_failure.setter
    def last_failure(self, value: str | None) -> None:
        self.learned.last_failure = value

    @property
    def tasks_expected(self) -> int:
        """Lanes, housekeeping and statistics: what ``/healthz`` expects to be running."""
        return self.lanes + (2 if self.publishes else 1)

    async def run(self, stop: asyncio.Event) -> None:
        """Forward until ``stop`` is set; Redis outages are waited out, never fatal.

        First this consumer's own pending entries (one lane: they must not be read
        twice), then ``concurrency`` lanes read new entries, each its own batch,
        while one more task takes over what dead consumers left behind. The tasks
        run in a TaskGroup: one that crashes stops them all and the error surfaces.
        """
        await self._resilient(stop, "start", self._start_step)
        log.info(
            "forwarder %s: %s: %d lanes, batches of %d",
            self.consumer,
            self.shard.stream,
            self.lanes,
            self.settings.batch_size,
        )
        async with asyncio.TaskGroup() as group:
            self._group = group
            group.create_task(self._tracked(stop, "housekeeping", self._housekeeping_step))
            if self.publishes:
                group.create_task(self._tracked(stop, "statistics", self._stats_step))
            for n in range(self.lanes):
                group.create_task(self._tracked(stop, f"lane {n}", self._lane_step))

    async def _tracked(
        self, stop: asyncio.Event, name: str, step: Callable[[asyncio.Event], Awaitable[bool]]
    ) -> None:
        self.tasks_running += 1
        try:
            await self._resilient(stop, name, step)
        except Exception as exc:
            exc.add_note(f"in forwarder {self.consumer}, {name}")
            raise
        finally:
            self.tasks_running -= 1

    async def _resilient(
        self, stop: asyncio.Event, name: str, step: Callable[[asyncio.Event], Awaitable[bool]]
    ) -> None:
        """Run ``step`` until it returns False or ``stop`` is set; back off on Redis errors."""
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_max)
        while not stop.is_set():
            try:
                if not await step(stop):
                    return
                backoff.succeeded()
                self.redis_ok = True
            except QueueFullError as exc:
                # A write Redis refuses at maxmemory (a DLQ entry, a missing group): the
                # step is tried again; the commands that drain the stream still run.
                self._set_full(True)
                await self._back_off(stop, backoff, name, "redis_full", exc)
            except QueueReplyError as exc:
                if not str(exc).startswith(("NOGROUP", "UNBLOCKED")):
                    raise
                # The stream or group vanished (Redis restarted empty, key deleted).
                log.warning("forwarder %s: consumer group missing; creating it", self.consumer)
                await streams.ensure_group(self.redis, self.shard)
            except (*QueueError, OSError) as exc:
                self.redis_ok = False
                await self._back_off(stop, backoff, name, "redis", exc)

    async def _back_off(
        self, stop: asyncio.Event, backoff: Backoff, name: str, kind: str, exc: Exception
    ) -> None:
        """Count the failure (``kind``: redis or redis_full), log it, wait before the retry."""
        self.metrics.failures.labels(kind).inc()
        wait = backoff.failed()
        state = "redis full" if kind == "redis_full" else "redis unavailable"
        log.warning(
            "forwarder %s: %s: %s (%s); retry in %.2fs",
            self.consumer,
            name,
            state,
            brief(exc),
            wait,
        )
        await pause(stop, wait)

    async def _start_step(self, stop: asyncio.Event) -> bool:
        """Create the group, then drain this consumer's own pending entries; False when done."""
        await streams.ensure_group(self.redis, self.shard)
        checked = self.clock()
        entries = await streams.read(
            self.redis, self.shard, self.consumer, "0", self.settings.batch_size, None
        )
        if not entries:
            return False
        await self.handle(entries, stop, checked_at=checked, redelivered=True)
        return not stop.is_set()

    async def _lane_step(self, stop: asyncio.Event) -> bool:
        """Take a share of the window, read at most that many new entries, deliver them.

        One of several shards' readers does not block in Redis holding its share: an
        empty shard would keep the window from the shards that have entries. It reads
        without blocking, and waits ``SHARD_IDLE`` with its share given back."""
        block = self.settings.block_ms if len(self.all_shards) == 1 else None
        async with self.pacer.window(stop) as permit:
            if not permit:
                return False
            checked = self.clock()
            entries = await streams.read(
                self.redis, self.shard, self.consumer, ">", permit.events, block
            )
            await self.pacer.shrink(permit, len(entries))
            if entries:
                await self.handle(entries, stop, checked_at=checked, redelivered=False)
        if not entries and block is None:
            await pause(stop, min(SHARD_IDLE, self.settings.block_ms / 1000))
        return True

    async def _stats_step(self, stop: asyncio.Event) -> bool:
        """Publish this forwarder's view for the controller (expires if the process dies)."""
        interval = self.settings.stats_interval
        view = dataclasses.replace(
            self.pacer.snapshot(), redis_full=self.redis_full, last_failure=self.last_failure
        )
        await views.publish_stats(self.redis, self.consumer, view.to_json(), ttl=5 * interval)
        await pause(stop, interval)
        return True

    async def _housekeeping_step(self, stop: asyncio.Event) -> bool:
        """Refresh queue gauges; take over entries idle longer than ``claim_idle``."""
        await self._refresh_stats()
        while not stop.is_set() and await self._claim_abandoned(stop):
            pass
        await pause(stop, self.settings.claim_interval)
        return True

    async def _claim_abandoned(self, stop: asyncio.Event) -> bool:
        """One XAUTOCLAIM call from the saved cursor; True while the scan goes on.

        Each claimed batch is delivered by a task of its own (at most ``concurrency``
        at once), so one batch waiting for analytics does not stop the takeover of
        the rest.
        """
        if len(self._claims) >= self.lanes:
            return False
        checked = self.clock()
        cursor, entries = await streams.autoclaim(
            self.redis,
            self.shard,
            self.consumer,
            self.settings.claim_idle,
            self.settings.batch_size,
            start=self._claim_cursor,
        )
        self._claim_cursor = cursor
        if entries:
            log.warning("forwarder %s: took over %d abandoned entries", self.consumer, len(entries))
            assert self._group is not None, "housekeeping runs inside run()'s TaskGroup"
            task = self._group.create_task(self._deliver_claimed(entries, stop, checked))
            self._claims.add(task)
            task.add_done_callback(self._claims.discard)
        return cursor != "0-0"

    async def _deliver_claimed(
        self, entries: Sequence[Entry], stop: asyncio.Event, checked: float
    ) -> None:
        try:
            async with self.pacer.taken_over(len(entries)):
                await self.handle(entries, stop, checked_at=checked, redelivered=True)
        except (*QueueError, OSError) as exc:
            # The entries stay pending under this consumer and are claimed again later.
            log.warning("forwarder %s: taken-over batch set aside: %s", self.consumer, exc)

    async def handle(
        self,
        entries: Sequence[Entry],
        stop: asyncio.Event,
        redelivered: bool,
        checked_at: float | None = None,
    ) -> None:
        """Push ``entries`` until accepted, dead-lettered, lost to a takeover, or ``stop``.

        ``checked_at``: when the read or claim that handed these entries over was
        sent (the first ownership check); None re-checks before the first push.
        """
        counts = (
            await streams.deliveries(self.redis, self.shard, self.consumer, [e.id for e in entries])
            if redelivered
            else {}
        )
        dead, sendable = triage(entries, counts, self.settings.max_deliveries)
        await self._dead_letter(dead)
        if sendable:
            await self._deliver(deque([Held(sendable)]), stop, checked_at, counts)

    async def _deliver(
        self,
        queue: deque[Held],
        stop: asyncio.Event,
        checked_at: float | None,
        counts: dict[str, int],
    ) -> None:
        """Attempt the head batch until the queue is empty, released or ``stop``; apply
        each attempt's step. ``checked_at`` survives only the steps that keep it."""
        backoff = Backoff(self.settings.backoff_base, self.settings.backoff_max)
        while queue and not stop.is_set():
            step = await self._attempt(queue, stop, checked_at)
            checked_at = None  # after a wait or a push, ownership is checked again
            match step:
                case Released(gated=gated):
                    if gated:
                        self.pacer.abandon_probe()
                    return
                case Refit(checked_at=kept):
                    checked_at = kept
                case HeadTakenOver(checked_at=kept):
                    self.pacer.abandon_probe()
                    checked_at = kept
                case BreakerOpen(wait=wait):
                    # Analytics is down: hold, and probe when the breaker says.
                    if not await self._hold(queue, stop, wait):
                        return
                case RetryDenied():
                    if not await self._hold(queue, stop, backoff.failed()):
                        return
                case Delivered():
                    await self._acknowledge(queue.popleft())
                    backoff.succeeded()
                case Split(history=history, too_large=too_large):
                    self._split(queue, queue.popleft(), too_large, history)
                case DeadLetter(reason=reason):
                    entry = queue.popleft().entries[0]
                    await self._dead_letter([(entry, reason, counts.get(entry.id, 1))])
                case RetryAfter():
                    if not await self._retry_later(queue, stop, step, backoff):
                        return
                case Resend():
                    pass
                case _:
                    assert_never(step)

    async def _attempt(
        self, queue: deque[Held], stop: asyncio.Event, checked_at: float | None
    ) -> Attempt:
        """One try at the head batch: check ownership, fit it, pass the gates, push it."""
        if checked_at is None:
            checked_at = self.clock()
            if not await self._keep_owned(queue):
                return Released()
        if self._fit(queue):
            return Refit(checked_at)
        gate, wait = self.pacer.gate()
        if gate is Gate.WAIT:
            return BreakerOpen(wait)
        if gate is Gate.PROBE and len(queue[0].entries) > 1:
            self._split_off_probe(queue)
        held = queue[0]
        if held.attempts and gate is Gate.SEND and not self.pacer.may_retry():
            return RetryDenied()
        if not held.attempts:
            self.pacer.first_attempt()
        try:
            slot = await self.pacer.reserve(len(held.entries))
            slot_rate = self.pacer.budget  # the budget this slot was reserved at
            if slot > 0:
                # Our slot in the shared budget is later: wait, then check ownership
                # again, counted from when the check is sent: a stall before its answer
                # is read must not extend the push past the ownership the check renewed.
                if not await self._hold(queue, stop, slot, slot_rate):
                    return Released(gated=True)
                checked_at = self.clock()
                if not await self._keep_owned(queue):
                    return Released(gated=True)
                if queue[0] is not held:
                    return HeadTakenOver(checked_at)
            return await self._push(held, checked_at)
        except BaseException:
            # A Redis error before the push (the budget, the ownership check): a probe
            # taken here was never sent; another may go (a no-op once it was answered).
            if gate is Gate.PROBE:
                self.pacer.abandon_probe()
            raise

    async def _push(self, held: Held, checked_at: float) -> AfterPush:
        """Push ``held`` within its ownership window; learn from the answer; classify it."""
        ticket = self.pacer.begin(len(held.entries))
        started = self.clock()
        result = await self.sink.push(
            [e.raw or b"" for e in held.entries], checked_at + self.settings.push_timeout
        )
        held.attempts += 1
        now = self.clock()
        latency = None if result.outcome is Outcome.EXPIRED else now - started
        if latency is not None:
            self.metrics.push_latency.observe(latency)
        await self.pacer.record(ticket, result, latency)
        step = after_push(
            result,
            len(held.entries),
            held.history,
            self.last_accepted_at,
            split_after=self.settings.split_after,
            honor_retry_after=self.settings.honor_retry_after,
            now=now,
        )
        if not isinstance(step, Delivered):
            self.metrics.failures.labels(result.outcome.value).inc()
        return step

    async def _acknowledge(self, held: Held) -> None:
        await streams.ack_delete(self.redis, self.shard, [e.id for e in held.entries])
        self.last_accepted_at = self.clock()
        self.metrics.forwarded.inc(len(held.entries))
        self.metrics.batch_size.observe(len(held.entries))

    async def _retry_later(
        self, queue: deque[Held], stop: asyncio.Event, step: RetryAfter, backoff: Backoff
    ) -> bool:
        """Keep the head batch's failures, put it last, wait; False to give up."""
        queue[0].history = step.history
        self.last_failure = f"{step.result.outcome.value}: {step.result.detail}"[:300]
        # Analytics answered (or timed out) and this forwarder lives: these deliveries
        # were no crash, so they do not count towards max_deliveries.
        await streams.survived(
            self.redis, self.shard, self.consumer, [e.id for e in queue[0].entries]
        )
        queue.rotate(-1)  # let the other sub-batches show whether analytics is up
        # An open breaker paces the probes itself; otherwise back off with jitter.
        jitter = 0.0 if self.pacer.breaker_open() else backoff.failed()
        wait = retry_wait(jitter, step.retry_after, cap=max(self.settings.backoff_max, 60.0))
        log.warning(
            "forwarder %s: push %s (%s); %d events retry in %.2fs",
            self.consumer,
            step.result.outcome.value,
            step.result.detail,
            sum(len(h.entries) for h in queue),
            wait,
        )
        return await self._hold(queue, stop, wait)

    def _split_off_probe(self, queue: deque[Held]) -> None:
        """Put the head batch's first event in a batch of its own: the breaker's probe."""
        held = queue.popleft()
        queue.appendleft(Held(held.entries[1:], held.history, held.attempts))
        queue.appendleft(Held(held.entries[:1], held.history, held.attempts))

    def _fit(self, queue: deque[Held]) -> bool:
        """Cut the head batch to what one push may carry now (events, bytes); True if cut."""
        held = queue[0]
        limit = self.pacer.push_size()
        if len(held.entries) > limit:
            # One cut: the rest is cut again at its turn, to the window of that moment.
            queue.popleft()
            queue.appendleft(Held(held.entries[limit:], held.history, held.attempts))
            queue.appendleft(Held(held.entries[:limit], held.history, held.attempts))
            return True
        return self._fit_byte_cap(queue)

    def _fit_byte_cap(self, queue: deque[Held]) -> bool:
        """Cut the head batch to the learned push byte cap; True when it was cut."""
        held = queue[0]
        if self.push_byte_cap is None or len(held.entries) < 2 or held.size <= self.push_byte_cap:
            return False
        runs = split_to_byte_cap([wire_size(e) for e in held.entries], self.push_byte_cap)
        queue.popleft()
        pieces, start = [], 0
        for run in runs:
            pieces.append(Held(held.entries[start : start + run], held.history, held.attempts))
            start += run
        queue.extendleft(reversed(pieces))
        return True

    def _split(
        self, queue: deque[Held], held: Held, too_large: bool, history: FailureHistory
    ) -> None:
        """Halve ``held``. The halves inherit its failure history: what analytics accepted
        since the whole batch began to fail is evidence against the half still failing."""
        cap = lowered_byte_cap(self.push_byte_cap, held.size) if too_large else None
        if cap is not None:
            self.push_byte_cap = cap
            log.warning(
                "forwarder %s: analytics refused %d bytes (413); batches now at most %d bytes",
                self.consumer,
                held.size,
                cap,
            )
        half = len(held.entries) // 2
        queue.appendleft(Held(held.entries[half:], history, held.attempts))
        queue.appendleft(Held(held.entries[:half], history, held.attempts))

    async def _keep_owned(self, queue: deque[Held]) -> bool:
        """Drop entries another forwarder took over; renew the rest. False when none is left."""
        ids = [e.id for h in queue for e in h.entries]
        owned = await streams.refresh_owned(self.redis, self.shard, self.consumer, ids)
        lost = len(ids) - len(owned)
        if lost:
            self.metrics.lost_ownership.inc(lost)
            log.warning(
                "forwarder %s: %d held entries were taken over by another forwarder while "
                "this one was stalled; dropped without pushing them",
                self.consumer,
                lost,
            )
            for held in list(queue):
                held.entries = [e for e in held.entries if e.id in owned]
                if not held.entries:
                    queue.remove(held)
        return bool(queue)

    async def _hold(
        self, queue: deque[Held], stop: asyncio.Event, wait: float, slot_rate: float | None = None
    ) -> bool:
        """Wait ``wait`` seconds, renewing ownership every ``refresh_every``; False to give up.

        ``slot_rate``: the wait is for a slot of the shared budget reserved at this rate; it
        is looked at again every ``SLOT_RECHECK`` seconds, and a budget raised meanwhile
        shortens it."""
        deadline = self.clock() + wait
        every = self.settings.refresh_every
        if slot_rate is not None:
            every = min(every, SLOT_RECHECK)
        renewed = self.clock()
        while True:
            remaining = deadline - self.clock()
            if remaining <= 0:
                return True
            if await pause(stop, min(remaining, every)):
                return False  # stopping: the entries stay pending for a later owner
            now = self.clock()
            if slot_rate is not None:
                left, slot_rate = await self.pacer.rescaled_wait(deadline - now, slot_rate)
                deadline = now + left
            if now >= deadline or now - renewed + every <= self.settings.refresh_every:
                continue  # renewed at the last wake that keeps the gap within refresh_every
            renewed = now
            if not await self._keep_owned(queue):
                return False

    async def _dead_letter(self, dead: list[DeadLetterEntry]) -> None:
        if not dead:
            return
        await streams.dead_letter(self.redis, self.shard, dead)
        self.metrics.dead_lettered.inc(len(dead))
        for entry, reason, _ in dead:
            log.error("forwarder %s: entry %s to the DLQ: %s", self.consumer, entry.id, reason)

    def _set_full(self, full: bool) -> None:
        if full != self.redis_full:
            log.warning(
                "forwarder %s: %s",
                self.consumer,
                "redis full (at maxmemory): draining with the commands it still serves"
                if full
                else "redis no longer full",
            )
        self.redis_full = full
        self.metrics.redis_full.set(1 if full else 0)

    async def _refresh_stats(self) -> None:
        self._set_full(await redis_full(self.redis, self.shard.stream))
        if not self.publishes:
            return
        stats = await streams.queue_stats(self.redis, self.all_shards)
        self.metrics.pending.set(stats.pending)
        self.metrics.stream_length.set(stats.length)
        self.metrics.dlq_size.set(stats.dlq)
