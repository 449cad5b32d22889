"""The adaptive-delivery building blocks: limiter, breaker, retry allowance (pure, properties)."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackrelay.control.breaker import BreakerConfig, BreakerState, Mode, allow, record
from trackrelay.control.limiter import (
    REBASE_AFTER,
    LimiterConfig,
    LimiterState,
    band,
    chunk,
    is_slow,
    observe,
    restart,
    start,
    wants_alone,
)
from trackrelay.control.percentile import percentile
from trackrelay.control.retry_allowance import RetryAllowance

B = 100
CFG = LimiterConfig(batch=B, min_limit=1, max_limit=800)
pushes = st.lists(
    st.tuples(
        st.booleans(),  # congested
        st.one_of(st.none(), st.floats(0.001, 10.0)),  # latency
        st.integers(1, B),  # events
        st.booleans(),  # saturated
        st.floats(0.0, 3.0),  # seconds since the last push
    ),
    max_size=300,
)
Push = tuple[bool, float | None, int, bool, float]


def run(steps: list[Push]) -> tuple[LimiterState, float]:
    state, now = start(CFG), 0.0
    for congested, latency, events, saturated, dt in steps:
        now += dt
        state = observe(
            CFG,
            state,
            now=now,
            events=events,
            congested=congested,
            latency=latency,
            saturated=saturated,
        )
    return state, now


@given(pushes, st.floats(0, 900))
def test_the_window_stays_within_its_bounds(steps: list[Push], in_flight: float) -> None:
    state, _ = run(steps)
    assert CFG.min_limit <= state.limit <= CFG.max_limit
    size = chunk(CFG, state, in_flight)
    assert 0 <= size <= B
    assert size <= max(1, state.limit - in_flight) or in_flight == 0


@given(pushes, st.integers(1, B), st.one_of(st.none(), st.floats(0.001, 10.0)))
def test_every_congestion_signal_shrinks_the_window(
    steps: list[Push], events: int, latency: float | None
) -> None:
    state, now = run(steps)
    after = observe(CFG, state, now=now, events=events, congested=True, latency=latency)
    assert after.limit < state.limit or after.limit == CFG.min_limit
    assert not after.slow_start


@given(pushes)
def test_a_push_slower_than_the_band_shrinks_the_window(steps: list[Push]) -> None:
    state, now = run(steps)
    slowest = band(CFG, state, B)
    if slowest is None:
        return
    after = observe(CFG, state, now=now, events=B, congested=False, latency=slowest * 1.01)
    if state.slow_alone + 1 >= REBASE_AFTER:
        # The second lone push in a row slower than the band: nothing of ours was queued
        # ahead of it, so analytics became slower; its cost is the baseline now.
        assert after.baseline == pytest.approx(slowest * 1.01 / B)
        assert after.limit >= state.limit and after.slow_start
    else:
        assert after.limit < state.limit or after.limit == CFG.min_limit
        assert after.recheck and wants_alone(CFG, after, now, size=B)


def test_analytics_slower_for_its_own_reasons_becomes_the_baseline_after_two_lone_pushes() -> None:
    state, now = start(CFG), 0.0
    for _ in range(5):  # learn 0.05 s per full push
        now += 1
        state = observe(CFG, state, now=now, events=B, congested=False, latency=0.05)
    assert state.baseline == pytest.approx(0.05 / B)
    now += 1
    first = observe(CFG, state, now=now, events=B, congested=False, latency=1.2)
    assert first.limit < state.limit and first.recheck  # maybe our queue: shrink, look alone
    now += 1
    second = observe(CFG, first, now=now, events=B, congested=False, latency=1.2)
    assert second.baseline == pytest.approx(1.2 / B)
    assert not is_slow(CFG, second, B, 1.2)
    # Not our queue: the cut is undone, and slow start finds the window for the new pace.
    assert second.limit == state.limit and second.slow_start
    grown = second
    for _ in range(3):  # each acknowledged event adds one: the window doubles per round trip
        now += 0.4
        grown = observe(CFG, grown, now=now, events=B, congested=False, latency=1.2, alone=False)
    assert grown.limit == state.limit + 3 * B


def test_a_run_of_slow_pushes_ended_by_an_overload_answer_is_not_undone() -> None:
    state, now = start(CFG), 0.0
    for _ in range(5):
        now += 1
        state = observe(CFG, state, now=now, events=B, congested=False, latency=0.05)
    now += 1
    slow = observe(CFG, state, now=now, events=B, congested=False, latency=1.2)
    assert slow.before_slow == state.limit
    refused = observe(CFG, slow, now=now + 1, events=B, congested=True, latency=None)
    assert refused.before_slow is None  # congestion: that cut was ours to make


@given(pushes)
def test_the_window_recovers_once_congestion_ends(steps: list[Push]) -> None:
    state, now = run(steps)
    # Analytics healthy again and idle: 1 ms per event, no queue.
    for _ in range(3000):
        now += 0.1
        size = min(B, max(1, int(state.limit)))
        state = observe(CFG, state, now=now, events=size, congested=False, latency=0.001 * size)
    assert state.limit == CFG.max_limit


@given(st.floats(0.0001, 0.01), st.integers(50, 400))
def test_steady_no_load_answers_never_shrink_the_window(unit: float, n: int) -> None:
    state, now, previous = start(CFG), 0.0, CFG.start_limit
    for _ in range(n):
        now += 0.05
        state = observe(CFG, state, now=now, events=B, congested=False, latency=unit * B)
        assert state.limit >= previous
        previous = state.limit


@given(st.floats(50, 5000), st.floats(0.0, 0.2), st.randoms(use_true_random=False))
def test_against_a_queueing_analytics_the_window_settles_in_a_band(
    capacity: float, noise: float, rng: random.Random
) -> None:
    """Closed loop: analytics serves ``capacity`` events/s and queues the whole window,
    so a push's latency is window / capacity. The window must settle around 1.5
    batches and stay in a band set by ``latency_decrease``, never collapse or run off."""
    state, now, seen = start(CFG), 0.0, []
    for n in range(600):
        size = min(B, max(1, int(state.limit)))
        queued = max(state.limit, size)
        latency = queued / capacity * (1 + noise * rng.random())
        now += latency
        alone = size >= state.limit
        state = observe(
            CFG, state, now=now, events=size, congested=False, latency=latency, alone=alone
        )
        if n >= 300:
            seen.append(state.limit)
    assert min(seen) >= 0.5 * B
    assert max(seen) <= 2.0 * B
    # At most two decreases in a row (x0.8 each) and one additive step apart.
    assert max(seen) / min(seen) <= 1 / 0.8**2 + 0.2


def test_slow_start_doubles_then_additive_increase() -> None:
    cfg = LimiterConfig(batch=B, max_limit=800, initial=100, step=10)
    state = start(cfg)
    state = observe(cfg, state, now=0, events=100, congested=False, latency=0.1, alone=False)
    assert state.limit == 200 and state.slow_start  # doubles per window of events
    alone = observe(cfg, start(cfg), now=0, events=100, congested=False, latency=0.1)
    assert alone.limit == 150  # a push alone cannot show a queue: half the growth
    state = observe(cfg, state, now=0.1, events=100, congested=True, latency=None)
    assert state.limit == 100 and not state.slow_start
    state = observe(cfg, state, now=0.2, events=100, congested=False, latency=0.1)
    assert state.limit == 110  # +step per window of events


def test_a_light_load_does_not_grow_the_window() -> None:
    state = start(CFG)
    after = observe(CFG, state, now=0, events=3, congested=False, latency=0.01, saturated=False)
    assert after.limit == state.limit


def test_push_latency_limit_shrinks_pushes_below_one_batch() -> None:
    cfg = LimiterConfig(batch=B, max_limit=800, target=0.05)
    state, sizes = start(cfg), []
    for n in range(60):
        size = chunk(cfg, state, 0)
        sizes.append(size)
        state = observe(cfg, state, now=n, events=size, congested=False, latency=size * 0.001)
    # A push of 50 events takes 50 ms, the target: pushes hover just around 50.
    assert min(sizes[-20:]) >= 35 and max(sizes[-20:]) <= 65, sizes


def test_the_baseline_forgets_a_faster_past() -> None:
    """Capacity halves: after two epochs the no-load cost is the new one, not the old;
    pushes that shared the window with others never teach it."""
    state = start(CFG)
    state = observe(CFG, state, now=0, events=B, congested=False, latency=0.1)
    for t in range(1, 80):
        state = observe(
            CFG, state, now=t * 0.5, events=B, congested=False, latency=0.15, alone=False
        )
    assert state.baseline == 0.1 / B
    for t in range(80, 160):
        state = observe(CFG, state, now=t * 0.5, events=B, congested=False, latency=0.2)
    assert state.baseline == 0.2 / B


def test_a_push_too_small_to_teach_the_baseline_never_waits_to_go_alone() -> None:
    """A small budget caps pushes under half a batch: they cannot renew the baseline, so
    holding each for a lone push would leave one push in flight at a time."""
    cfg = LimiterConfig(batch=500)
    state = start(cfg)  # no baseline taught yet: every teaching push would go alone
    assert wants_alone(cfg, state, now=100.0, size=250)
    assert wants_alone(cfg, state, now=100.0)
    assert not wants_alone(cfg, state, now=100.0, size=68)


def test_breaker_opens_probes_and_closes() -> None:
    cfg = BreakerConfig(threshold=3, base_open=1.0, max_open=8.0)
    state = BreakerState()
    for t in range(3):
        ok, state = allow(cfg, state, t)
        assert ok
        state = record(cfg, state, False, t)
    assert state.mode is Mode.OPEN
    assert allow(cfg, state, 2.5)[0] is False
    ok, state = allow(cfg, state, 3.1)
    assert ok and state.mode is Mode.HALF_OPEN
    assert allow(cfg, state, 3.2)[0] is False  # one probe at a time
    state = record(cfg, state, False, 3.3)
    assert state.mode is Mode.OPEN and state.open_for == 2.0
    ok, state = allow(cfg, state, 5.4)
    state = record(cfg, state, True, 5.5)
    assert state == BreakerState()


@given(st.lists(st.tuples(st.booleans(), st.floats(0, 0.5)), max_size=300))
def test_an_open_breaker_lets_at_most_one_probe_per_opening(
    steps: list[tuple[bool, float]],
) -> None:
    cfg = BreakerConfig(threshold=2, base_open=1.0, max_open=16.0)
    state, now = BreakerState(), 0.0
    for ok, dt in steps:
        now += dt
        allowed, state = allow(cfg, state, now)
        if allowed:
            state = record(cfg, state, ok, now)
        assert state.open_for <= cfg.max_open
        if state.mode is Mode.OPEN:
            assert not allow(cfg, state, state.opened_at + state.open_for * 0.99)[0]


@given(st.integers(0, 10_000), st.floats(0.01, 0.5))
def test_retries_stay_a_fraction_of_first_attempts(firsts: int, ratio: float) -> None:
    budget = RetryAllowance(ratio=ratio, cap=10.0, tokens=10.0)
    retries = 0
    for _ in range(firsts):
        budget = budget.first_attempt()
        ok, budget = budget.try_retry()
        retries += ok
        while ok:
            ok, budget = budget.try_retry()
            retries += ok
    assert retries <= 10 + ratio * firsts + 1e-6


def test_nearest_rank_percentiles() -> None:
    values = [float(n) for n in range(1, 101)]
    assert percentile(values, 0.5) == 50.0
    assert percentile(values, 0.99) == 99.0
    assert percentile(values, 1.0) == 100.0
    assert percentile(reversed(values), 0.0) == 1.0
    assert percentile([], 0.5) is None


def test_after_an_outage_the_window_returns_to_where_analytics_last_took_pushes() -> None:
    """An analytics that refuses a whole batch (its queue limit is under one) took pushes
    of 12 before the outage: the breaker's close brings the window back there, not to a
    whole batch it would refuse again."""
    state, now = start(CFG), 0.0
    for _ in range(2):
        now += 1
        state = observe(CFG, state, now=now, events=B, congested=True, latency=None)
    for _ in range(5):
        now += 1
        state = observe(
            CFG, state, now=now, events=12, congested=False, latency=0.012, saturated=False
        )
    took = state.limit
    assert took < B
    for _ in range(6):  # the outage: every push fails
        now += 1
        state = observe(CFG, state, now=now, events=1, congested=True, latency=None)
    assert state.limit < took
    back = restart(CFG, state)
    assert back.limit == took and not back.slow_start
    assert restart(CFG, start(CFG)).limit == B  # never accepted: one batch
