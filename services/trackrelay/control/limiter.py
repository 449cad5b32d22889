"""Adaptive delivery window: slow start, then AIMD on congestion (pure).

The forwarder's fast control loop (docs/architecture.md), as numbers in and numbers out. The limit
is a window of *events* in flight at analytics (not requests): with batches of
``batch`` events, a window of 1.4 batches means one full push plus a push of
0.4 batch. So the window sets concurrency and batch size at once, and it can
fall below one batch when one batch alone costs analytics too much.

One ``observe`` per finished push of ``events`` events:

- congestion (429/503, timeout, reset, or a push slower than the latency band
  or the optional push latency limit): the window is multiplied by ``decrease``
  (overload answers, failures) or ``latency_decrease`` (latency alone), and
  slow start ends;
- success in slow start: the window grows by the events acknowledged (it
  doubles every round trip) until a queue starts to form at analytics (a
  quarter of the band), as hybrid slow start does, or congestion;
- success afterwards: it grows by ``step * events / limit`` (``step`` events
  per round trip: additive increase);
- a success only grows the window when the window was in use (``saturated``):
  a light load must not teach it that analytics takes anything.

The latency band (delay-based congestion, as TCP Vegas and Vector's adaptive
request concurrency use) rests on ``unit``, analytics' no-load cost per event:
the smallest latency per event of recent pushes that went out *alone* (nothing
else of this forwarder in flight, so our own queue cannot inflate it) and
carried at least half a batch. It is a windowed minimum over two epochs of
``memory`` seconds, so it follows analytics when it really becomes slower; an
epoch without such a push keeps the last value rather than forgetting it. A
push of at least half a batch is slow when its latency exceeds its own no-load
cost by more than ``margin`` batches of queueing:
``latency > unit * (events + margin * batch)``. So the window settles where
analytics holds about half a batch of our work in its queue: enough that it
never idles, little enough that its response time stays within ``1 + margin``
of one idle batch. A push alone is arranged once per ``memory`` seconds
(``wants_alone``) so the baseline stays fresh, and after every push slower than the
band: two lone pushes in a row still slower than it mean analytics itself became
slower (nothing of ours was queued ahead of them), and their cost becomes the
baseline at once rather than after two epochs. The cuts that slowness caused are
then undone and slow start runs again: at a slower pace the same rate needs more
events in flight (Little's law), and additive increase at a long round trip would
take a minute to find them. Smaller pushes are not judged
by latency: a request's fixed cost (which a per-event unit cannot see) would
make them look slow and shrink the window for nothing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

REBASE_AFTER = 2
"""Lone pushes in a row slower than the band after which the band is wrong, not the load:
nothing of ours was queued ahead of them, so their cost is analytics' no-load cost now."""
WARMUP_ALONE = 3
"""Pushes that go out alone at start, so one slow first request cannot set the baseline."""


@dataclass(frozen=True, slots=True)
class LimiterConfig:
    batch: int = 500
    """Events in a full push (the forwarder's batch size)."""
    min_limit: float = 1.0
    max_limit: float = 8000.0
    initial: float | None = None
    """The starting window; None: half a batch (slow start doubles it to one batch
    without making any push wait behind a whole batch of ours)."""
    step: float | None = None
    """Additive increase, events per round trip; None: an eighth of a batch."""
    decrease: float = 0.5
    """Factor on overload answers (429/503), timeouts and resets."""
    latency_decrease: float = 0.8
    """Factor on a push slower than the latency band or target."""
    margin: float = 0.25
    """Queueing, in batches of no-load work, tolerated before latency means congestion."""
    memory: float = 10.0
    """Seconds per epoch of the windowed minimum (the baseline covers the last two)."""
    target: float | None = None
    """A latency no push should exceed (seconds); None: only the learned band."""
    min_chunk: float = 0.25
    """A push waits until at least this share of ``min(batch, limit)`` is free."""

    def __post_init__(self) -> None:
        if self.batch < 1:
            raise ValueError("batch must be >= 1")
        if not 0 < self.min_limit <= self.start_limit <= self.max_limit:
            raise ValueError("need 0 < min_limit <= initial <= max_limit")
        if not 0 < self.decrease < 1 or not 0 < self.latency_decrease < 1:
            raise ValueError("decrease factors must be in (0, 1)")
        if self.margin <= 0 or self.memory <= 0 or (self.target is not None and self.target <= 0):
            raise ValueError("margin, memory and target must be > 0")

    @property
    def start_limit(self) -> float:
        if self.initial is not None:
            return self.initial
        return min(self.max_limit, max(self.min_limit, self.batch / 2))

    @property
    def increase(self) -> float:
        return self.step if self.step is not None else max(1.0, self.batch / 8)


@dataclass(frozen=True, slots=True)
class LimiterState:
    limit: float
    slow_start: bool = True
    unit: float | None = None
    """Smallest seconds per event seen in the current epoch (no-load cost)."""
    unit_before: float | None = None
    """The same for the previous epoch."""
    epoch_end: float = -math.inf
    alone_at: float = -math.inf
    """When a push last taught the baseline."""
    taught: int = 0
    """Pushes that taught the baseline so far."""
    slow_alone: int = 0
    """Pushes in a row that went out alone and were still slower than the band."""
    recheck: bool = False
    """A push was slower than the band: the next one goes alone, to see whether the
    slowness is our queue or analytics' own."""
    before_slow: float | None = None
    """The window before the current run of pushes slower than the band shrank it (None:
    no such run). If the run proves to be analytics' own slowness, the cuts were for
    nothing and the window returns here."""
    last_ok: float | None = None
    """The window after the last push analytics took without congestion: where a
    window driven down by an outage's failures starts again (``restart``)."""

    @property
    def baseline(self) -> float | None:
        """Analytics' no-load seconds per event over the last one to two epochs."""
        known = [u for u in (self.unit, self.unit_before) if u is not None]
        return min(known) if known else None


def start(config: LimiterConfig) -> LimiterState:
    return LimiterState(limit=config.start_limit)


def chunk(config: LimiterConfig, state: LimiterState, in_flight: float) -> int:
    """Events the next push may carry now: 0 means wait for pushes in flight to end."""
    free = math.floor(state.limit - in_flight)
    wanted = min(float(config.batch), state.limit)
    if free < max(1.0, config.min_chunk * wanted):
        return 0 if in_flight > 0 else max(1, min(config.batch, math.floor(state.limit)))
    return int(min(config.batch, free))


def band(config: LimiterConfig, state: LimiterState, events: int) -> float | None:
    """The latency above which a push of ``events`` events counts as congestion."""
    limits = []
    baseline = state.baseline
    if baseline is not None and _judged(config, events):
        # Judged as if it held a whole batch: a smaller push costs analytics at most as
        # much, and its fixed cost (which a per-event unit cannot see) would otherwise
        # make it look slow next to the full push that taught the unit.
        limits.append(baseline * (max(events, config.batch) + config.margin * config.batch))
    if config.target is not None:
        limits.append(config.target)
    return min(limits) if limits else None


def _judged(config: LimiterConfig, events: int) -> bool:
    """Whether a push is large enough for its latency to be judged against the unit."""
    return events >= 0.5 * config.batch


def _queued(config: LimiterConfig, state: LimiterState, events: int, latency: float) -> bool:
    """Whether a queue is forming: a quarter of the band's tolerated queueing is used.

    Every push counts, a small one as if it held half a batch: a request's fixed
    cost may then end slow start early, which costs a little time, never a decrease.
    """
    baseline = state.baseline
    if baseline is None:
        return False
    sized = max(events, 0.5 * config.batch)
    return latency > baseline * (sized + config.margin / 4 * config.batch)


def is_slow(config: LimiterConfig, state: LimiterState, events: int, latency: float) -> bool:
    slowest = band(config, state, events)
    return slowest is not None and latency > slowest


def _learn(
    config: LimiterConfig, state: LimiterState, now: float, events: int, latency: float
) -> LimiterState:
    if now >= state.epoch_end:
        state = replace(
            state,
            unit_before=state.unit if state.unit is not None else state.unit_before,
            unit=None,
            epoch_end=now + config.memory,
        )
    if not _judged(config, events):
        return state  # small pushes carry mostly fixed overhead: not a per-event cost
    per_event = latency / events
    state = replace(state, alone_at=now, taught=state.taught + 1)
    if state.unit is None or per_event < state.unit:
        state = replace(state, unit=per_event)
    return state


def wants_alone(
    config: LimiterConfig, state: LimiterState, now: float, size: int | None = None
) -> bool:
    """Whether the next push should go out alone, to renew the baseline.

    ``size``: the most events the next push may carry. A push too small to teach the
    baseline (under half a batch, as when a small budget caps pushes) never goes alone:
    it could not renew the baseline, and holding every push for it would leave one push
    in flight at a time.

    Under steady load pushes overlap and never measure analytics without our own
    queue; once per ``memory`` seconds one push waits for the others to finish
    (as BBR's ProbeRTT drains its queue), which costs one short pipeline bubble.
    The first few pushes all go alone: the very first one also pays for opening
    the connection.
    """
    if size is not None and not _judged(config, size):
        return False
    if state.recheck:
        return True
    return state.taught < WARMUP_ALONE or now - state.alone_at >= config.memory


def observe(
    config: LimiterConfig,
    state: LimiterState,
    *,
    now: float,
    events: int,
    congested: bool,
    latency: float | None,
    saturated: bool = True,
    alone: bool = True,
) -> LimiterState:
    """The state after one push of ``events`` events.

    ``congested``: an overload answer, a timeout or a reset. ``latency``: the
    push's response time when analytics answered. ``saturated``: the window was
    (nearly) full when the push was sent. ``alone``: no other push of this
    forwarder was in flight meanwhile (only such pushes teach the baseline).
    """
    slow = latency is not None and is_slow(config, state, events, latency)
    queueing = latency is not None and _queued(config, state, events, latency)
    if latency is not None and not congested and alone and _judged(config, events):
        if slow and state.slow_alone + 1 >= REBASE_AFTER:
            # Slow with nothing of ours ahead of it, twice in a row: analytics itself
            # became slower. Its cost now is the baseline (the old one is forgotten);
            # the cuts its slowness caused are undone, and slow start finds the window
            # that keeps it busy at its new pace (the same rate takes more in flight).
            # Not when the push broke the latency target: that cut was asked for.
            undo = config.target is None or latency <= config.target
            return replace(
                state,
                limit=max(state.limit, state.before_slow or 0.0) if undo else state.limit,
                slow_start=undo or state.slow_start,
                before_slow=None,
                unit=latency / events,
                unit_before=None,
                epoch_end=now + config.memory,
                alone_at=now,
                taught=state.taught + 1,
                slow_alone=0,
                recheck=False,
            )
        state = replace(state, slow_alone=state.slow_alone + 1 if slow else 0, recheck=False)
    if latency is not None and not congested and alone:
        state = _learn(config, state, now, events, latency)
    if slow:
        before = state.before_slow if state.before_slow is not None else state.limit
        state = replace(state, recheck=True, before_slow=None if congested else before)
    elif congested or (latency is not None and _judged(config, events)):
        state = replace(state, before_slow=None)
    if congested or slow:
        factor = config.decrease if congested else config.latency_decrease
        limit = max(config.min_limit, state.limit * factor)
        return replace(state, limit=limit, slow_start=False)
    if latency is not None:
        state = replace(state, last_ok=state.limit)
    if not saturated:
        return state
    if state.slow_start and queueing:
        # Hybrid slow start (HyStart): leave it as soon as a queue forms, before loss.
        return replace(state, slow_start=False)
    if state.slow_start:
        # A push alone cannot show a queue forming: grow by half as much on it.
        growth = float(events) if not alone else events / 2
    else:
        growth = config.increase * events / state.limit
    return replace(state, limit=min(config.max_limit, state.limit + growth))


def restart(config: LimiterConfig, state: LimiterState) -> LimiterState:
    """After an outage: the window analytics last took well, then additive increase.

    The outage drove the window down with every failed push; it says nothing about
    analytics' pace once back, and slow start would overshoot into its fresh queue.
    So the window returns to where the last accepted push left it (one batch if none
    was ever accepted), not to a whole batch: an analytics that refuses pushes of a
    whole batch would refuse every push again, and open the breaker again.
    """
    back = state.last_ok if state.last_ok is not None else float(config.batch)
    return replace(state, slow_start=False, limit=max(state.limit, back))
