"""How fast a forwarder pushes: adaptive window, circuit breaker, retry allowance, shared budget.

The decisions are pure (``control/limiter.py``, ``control/breaker.py``,
``control/retry_allowance.py``); this module holds their state for one process,
turns them into waits, and keeps the statistics the forwarder publishes.

- Lanes take a share of the window before they read (``window``), so no lane
  holds entries it may not push; a push is cut to ``push_size``.
- ``gate`` asks the breaker before every push: send, send a single-event probe,
  or wait until the breaker lets a probe through.
- Retries need a token from the retry allowance (a probe does not: the breaker
  already spaces probes).
- ``reserve`` takes the push's events from the budget shared with every other
  replica (``queue/rate_budget.py``) and says how long to wait for its slot.

With ``adaptive`` off (the benchmark's fixed strategies, or an operator's
choice), every lane pushes full batches whenever it has them: only the shared
budget and the per-batch backoff apply.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import math
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from enum import StrEnum

from trackrelay.config.live import ConfigMapLive
from trackrelay.config.settings import ForwarderSettings
from trackrelay.control import breaker, limiter
from trackrelay.control.percentile import percentile
from trackrelay.control.push_outcome import Outcome, PushResult
from trackrelay.control.retry_allowance import RetryAllowance
from trackrelay.events import ForwarderStats, PushSpan, PushTotals
from trackrelay.forwarder.metrics import ForwarderMetrics
from trackrelay.queue import rate_budget
from trackrelay.queue.client import Queue

log = logging.getLogger(__name__)

Clock = Callable[[], float]

_BREAKER_LEVEL = {breaker.Mode.CLOSED: 0, breaker.Mode.HALF_OPEN: 1, breaker.Mode.OPEN: 2}
_STATS_SPAN = 30.0
"""Seconds of pushes the published latency percentiles and outcome counts cover."""
_RATE_SPAN = 10.0
"""Seconds over which the published events/s is averaged."""
_RECENT_SPAN = 5.0
"""Seconds of pushes the ``recent`` span covers (views; the controller reads ``totals``)."""
_LATENCY_WEIGHT = 0.2
"""Weight of a new answer's latency in the pushes' moving average (the push-size rule)."""


BUDGET_RECHECK = 0.5
"""Seconds between looks for a newly set budget while none is set."""


class Gate(StrEnum):
    SEND = "send"
    PROBE = "probe"
    """Send one event only: the breaker's half-open probe."""
    WAIT = "wait"


@dataclass(slots=True)
class Permit:
    """Events of the window a lane holds while its batch is read and pushed."""

    events: int

    def __bool__(self) -> bool:
        return self.events > 0


@dataclass(frozen=True, slots=True)
class Ticket:
    """A push under way: what the window looked like when it was sent."""

    events: int
    saturated: bool
    others: int
    """Pushes of this forwarder already in flight when it was sent."""
    seq: int


@dataclass(frozen=True, slots=True)
class _Push:
    at: float
    outcome: str
    events: int
    latency: float | None


class Pacer:
    def __init__(
        self,
        settings: ForwarderSettings,
        redis: Queue,
        metrics: ForwarderMetrics,
        clock: Clock = time.monotonic,
        live: ConfigMapLive | None = None,
    ) -> None:
        self.settings = settings
        self.redis = redis
        self.live = live
        """The budget's source in a cluster (the operator's ConfigMap); None: Redis."""
        self.metrics = metrics
        self.clock = clock
        self.adaptive = settings.adaptive
        self.config = limiter.LimiterConfig(
            batch=settings.batch_size,
            max_limit=float(settings.batch_size * settings.concurrency),
            target=settings.push_latency_limit,
        )
        self.state = limiter.start(self.config)
        self.breaker_config = breaker.BreakerConfig(
            threshold=settings.breaker_threshold,
            base_open=settings.breaker_open_base,
            max_open=settings.breaker_open_max,
        )
        self.breaker = breaker.BreakerState()
        self.retries = RetryAllowance(ratio=settings.retry_ratio)
        self.in_flight = 0
        self.budget: float | None = None
        self._changed = asyncio.Condition()
        self._pushes: collections.deque[_Push] = collections.deque()
        self._probing = False
        self._pushing = 0
        self._started = 0
        self._last_ok = True
        self._lone_retry_at = -math.inf
        self._budget_checked = -math.inf
        self._tickets = 0
        self._serving = 0
        self._done_waiting: set[int] = set()
        self._latency: float | None = None
        """Moving average of answered pushes' latency (seconds)."""
        self.totals = PushTotals(started=time.time())
        self.metrics.limit.set(self.state.limit)

    # -- the window ---------------------------------------------------------

    def _grant(self) -> int:
        if not self.adaptive:
            return self._cap(self.settings.batch_size)
        if self.breaker.mode is not breaker.Mode.CLOSED and self.in_flight > 0:
            return 0  # analytics is failing: only what is held already goes out (as probes)
        if self.in_flight > 0 and limiter.wants_alone(
            self.config, self.state, self.clock(), self.push_size()
        ):
            return 0  # let the pushes in flight finish: the next one measures the baseline
        return self._cap(limiter.chunk(self.config, self.state, self.in_flight))

    def _cap(self, events: int) -> int:
        if events <= 0 or self.budget is None:
            return events
        return min(events, self.budget_push_cap(self.budget))

    def budget_push_cap(self, budget: float) -> int:
        """The most events one push may carry under ``budget``: ``budget_tolerance`` of a
        second's budget, or, when more, what each lane must carry for the lanes together to
        deliver the whole budget at the pushes' latency (``budget * latency / concurrency``,
        Little's law). So a small budget stays deliverable at a slow analytics: 20 ev/s at
        1 s per push is 5 events a push over 4 lanes, not 20 one-event pushes in a row."""
        share = budget * self.settings.budget_tolerance
        if self._latency is not None:
            share = max(share, math.ceil(budget * self._latency / self.settings.concurrency))
        return max(1, math.floor(share))

    def push_size(self) -> int:
        """The most events one push may carry now."""
        size = self.settings.batch_size
        if self.adaptive:
            size = min(size, max(1, math.floor(self.state.limit)))
        return self._cap(size)

    @contextlib.asynccontextmanager
    async def window(self, stop: asyncio.Event) -> AsyncIterator[Permit]:
        """A share of the window for one lane's next batch (0 events when stopping).

        First come, first served: a lane that just gave its share back cannot take
        it again ahead of a taken-over batch that was already waiting.
        """
        permit = Permit(0)
        ticket = self._tickets
        self._tickets += 1
        try:
            async with self._changed:
                while not stop.is_set():
                    granted = self._grant() if ticket == self._serving else 0
                    if granted > 0:
                        permit.events = granted
                        self.in_flight += granted
                        break
                    # asyncio.timeout, not wait_for: Python 3.11's wait_for can lose a
                    # cancellation that arrives as the condition is notified, and a lane
                    # cancelled by a crashing sibling then waits here for ever.
                    with contextlib.suppress(TimeoutError):
                        async with asyncio.timeout(0.5):
                            await self._changed.wait()
        finally:
            self._done_waiting.add(ticket)
            while self._serving in self._done_waiting:
                self._done_waiting.discard(self._serving)
                self._serving += 1
            async with self._changed:
                self._changed.notify_all()
        self.metrics.in_flight.set(self.in_flight)
        try:
            yield permit
        finally:
            await self.shrink(permit, 0)

    @contextlib.asynccontextmanager
    async def taken_over(self, events: int) -> AsyncIterator[Permit]:
        """Count a taken-over batch as in flight at once, even past the window.

        Taken-over entries are already claimed: waiting for the window would let them
        go idle and be claimed again. At most ``concurrency`` such batches run at once,
        and their pushes are still cut to ``push_size`` and paced by breaker and budget.
        """
        permit = Permit(events)
        self.in_flight += events
        self.metrics.in_flight.set(self.in_flight)
        try:
            yield permit
        finally:
            await self.shrink(permit, 0)

    async def shrink(self, permit: Permit, events: int) -> None:
        """Give back what a lane holds beyond ``events`` (a short read, a finished push)."""
        if events >= permit.events:
            return
        self.in_flight -= permit.events - events
        permit.events = events
        self.metrics.in_flight.set(self.in_flight)
        async with self._changed:
            self._changed.notify_all()

    # -- before a push ------------------------------------------------------

    def gate(self) -> tuple[Gate, float]:
        """Whether the head batch may go now: send, probe with one event, or wait (seconds)."""
        if not self.adaptive:
            return Gate.SEND, 0.0
        now = self.clock()
        allowed, state = breaker.allow(self.breaker_config, self.breaker, now)
        self._set_breaker(state)
        if not allowed:
            return Gate.WAIT, max(0.05, breaker.reopens_in(state, now))
        if state.mode is breaker.Mode.HALF_OPEN:
            self._probing = True
            return Gate.PROBE, 0.0
        return Gate.SEND, 0.0

    def breaker_open(self) -> bool:
        """Whether the breaker holds pushes back (open or probing)."""
        return self.adaptive and self.breaker.mode is not breaker.Mode.CLOSED

    def abandon_probe(self) -> None:
        """The probe taken by ``gate`` was never sent."""
        if self._probing:
            self._probing = False
            self._set_breaker(breaker.abandon(self.breaker))

    def may_retry(self) -> bool:
        """Whether a held batch may be sent again now.

        While analytics fails, retries spend the retry allowance; once it accepts
        again (the last push succeeded), held batches are only paced by the window.
        """
        if not self.adaptive or self._last_ok:
            return True
        ok, self.retries = self.retries.try_retry()
        if ok:
            return True
        now = self.clock()
        if self._pushing == 0 and now >= self._lone_retry_at:
            # Nothing in flight and no token left: held batches filling the window would
            # wait for ever for the first attempts that earn tokens, which cannot start.
            # One retry goes, at most one every ``breaker_open_base``, like a probe.
            self._lone_retry_at = now + self.breaker_config.base_open
            return True
        self.metrics.retries_denied.inc()
        return False

    def first_attempt(self) -> None:
        self.retries = self.retries.first_attempt()

    async def reserve(self, events: int) -> float:
        """Take ``events`` from the shared budget: seconds to wait for the slot.

        With no budget set, Redis is asked again at most once per ``BUDGET_RECHECK``
        seconds (a budget set meanwhile applies within that time), not on every push.
        """
        now = self.clock()
        rate: float | None = None
        if self.live is not None:  # the operator's ConfigMap: the watch already holds it
            rate = self.live.budget()
            if rate is None:
                self.budget = None
                self.metrics.budget.set(0.0)
                return 0.0
        elif self.budget is None and now < self._budget_checked + BUDGET_RECHECK:
            return 0.0
        self._budget_checked = now
        wait, self.budget = await rate_budget.reserve(self.redis, events, rate)
        self.metrics.budget.set(self.budget or 0.0)
        if wait > 0:
            self.metrics.budget_wait.inc(wait)
        return wait

    async def rescaled_wait(self, remaining: float, rate: float) -> tuple[float, float]:
        """What is left of a wait for a budget slot reserved at ``rate``, with the budget
        as it is now: (seconds, the rate they are counted at).

        Raised since, the same events are due at the new pace (the reservation script
        rescales the shared clock the same way), so a rise ends long waits at once. A cut
        leaves a granted slot as it is.
        """
        if remaining <= 0:
            return remaining, rate
        if self.live is not None:
            now = self.live.budget()
        else:
            now = await rate_budget.get_budget(self.redis)
        if now is None:
            return 0.0, rate  # the budget was removed: nothing limits
        if now <= rate:
            return remaining, rate
        self.budget = now
        self.metrics.budget.set(now)
        return remaining * rate / now, now

    def begin(self, events: int) -> Ticket:
        """A push of ``events`` goes out now. Saturated: the window is (nearly) in full
        use, so success may grow it."""
        self._started += 1
        self._pushing += 1
        saturated = self.in_flight >= 0.75 * self.state.limit
        return Ticket(events, saturated, self._pushing - 1, self._started)

    # -- after a push -------------------------------------------------------

    async def record(self, ticket: Ticket, result: PushResult, latency: float | None) -> None:
        """Learn from a push's answer (``latency``: None when nothing was sent)."""
        self._pushing -= 1
        # Alone: nothing else of ours was in flight when it left, and nothing left after it.
        alone = ticket.others == 0 and self._started == ticket.seq
        events = ticket.events
        now = self.clock()
        probe, self._probing = self._probing, False
        if result.outcome is Outcome.EXPIRED:
            if probe:
                self._set_breaker(breaker.abandon(self.breaker))
            return
        self._pushes.append(_Push(now, result.outcome.value, events, latency))
        answered = result.status is not None and not result.congests
        self.totals = self.totals.add(
            accepted_events=events if result.outcome is Outcome.ACCEPTED else 0,
            congested=result.overloads,
            failed=result.outcome is Outcome.FAILED and not result.overloads,
            latency=latency if result.status is not None else None,
            duration=latency,
            delayed=self.adaptive
            and answered
            and latency is not None
            and limiter.is_slow(self.config, self.state, events, latency),
        )
        if answered and latency is not None:
            self._latency = (
                latency
                if self._latency is None
                else (1 - _LATENCY_WEIGHT) * self._latency + _LATENCY_WEIGHT * latency
            )
        while self._pushes and self._pushes[0].at < now - _STATS_SPAN:
            self._pushes.popleft()
        if not self.adaptive:
            return
        self.state = limiter.observe(
            self.config,
            self.state,
            now=now,
            events=events,
            congested=result.congests,
            latency=latency if answered else None,
            saturated=ticket.saturated,
            alone=alone,
        )
        self.metrics.limit.set(self.state.limit)
        log.debug(
            "push of %d events: %s in %s s (alone %s, saturated %s); window %.1f, unit %s",
            events,
            result.outcome.value,
            latency,
            alone,
            ticket.saturated,
            self.state.limit,
            self.state.baseline,
        )
        healthy = result.analytics_up
        self._last_ok = healthy
        was = self.breaker.mode
        self._set_breaker(breaker.record(self.breaker_config, self.breaker, healthy, now))
        if was is not breaker.Mode.CLOSED and self.breaker.mode is breaker.Mode.CLOSED:
            # Analytics is back: find its pace again by doubling, as after a TCP timeout.
            self.state = limiter.restart(self.config, self.state)
            self.metrics.limit.set(self.state.limit)
        async with self._changed:
            self._changed.notify_all()

    def _set_breaker(self, state: breaker.BreakerState) -> None:
        if state.mode is not self.breaker.mode:
            self.metrics.breaker.set(_BREAKER_LEVEL[state.mode])
        self.breaker = state

    # -- what the forwarder publishes ---------------------------------------

    def snapshot(self) -> ForwarderStats:
        """This forwarder's view for the controller: latencies, outcomes, limit, breaker."""
        now = self.clock()
        overall = self._span(now, _STATS_SPAN, rate_seconds=_RATE_SPAN)
        recent = [p for p in self._pushes if p.at >= now - _STATS_SPAN]
        latencies = [p.latency for p in recent if p.latency is not None]
        return ForwarderStats(
            at=time.time(),
            adaptive=self.adaptive,
            limit_events=round(self.state.limit, 1),
            in_flight_events=self.in_flight,
            push_size=self.push_size(),
            breaker=self.breaker.mode.value,
            budget=self.budget,
            overall=overall,
            latency_p90=percentile(latencies, 0.9),
            recent=self._span(now, _RECENT_SPAN, rate_seconds=_RECENT_SPAN),
            totals=self.totals,
        )

    def _span(self, now: float, seconds: float, rate_seconds: float) -> PushSpan:
        """Pushes that ended in the last ``seconds``: count, percentiles, outcomes, and the
        events/s analytics accepted over the last ``rate_seconds``."""
        pushes = [p for p in self._pushes if p.at >= now - seconds]
        latencies = [p.latency for p in pushes if p.latency is not None]
        accepted = sum(
            p.events for p in pushes if p.outcome == Outcome.ACCEPTED and p.at >= now - rate_seconds
        )
        return PushSpan(
            span_seconds=seconds,
            pushes=len(pushes),
            latency_p50=percentile(latencies, 0.5),
            latency_p99=percentile(latencies, 0.99),
            outcomes=dict(collections.Counter(str(p.outcome) for p in pushes)),
            events_per_second=accepted / rate_seconds,
            rate_seconds=rate_seconds,
        )
