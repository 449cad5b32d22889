"""The adaptive-delivery building blocks: limiter, breaker, retry budget (pure, properties)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackrelay.control.breaker import BreakerConfig, BreakerState, Mode, allow, record
from trackrelay.control.limiter import LimiterConfig, observe, start
from trackrelay.control.retry_budget import RetryBudget

CFG = LimiterConfig(min_limit=1, max_limit=50, initial=1)
signals = st.lists(
    st.tuples(st.booleans(), st.one_of(st.none(), st.floats(0.001, 10.0))), max_size=400
)


@given(signals)
def test_the_limit_stays_within_its_bounds(steps: list[tuple[bool, float | None]]) -> None:
    state = start(CFG)
    for congested, latency in steps:
        state = observe(CFG, state, congested, latency)
        assert CFG.min_limit <= state.limit <= CFG.max_limit
        assert 1 <= state.permits <= CFG.max_limit


@given(signals, st.floats(0.001, 10.0))
def test_every_congestion_signal_lowers_the_limit(
    steps: list[tuple[bool, float | None]], latency: float
) -> None:
    state = start(CFG)
    for congested, lat in steps:
        state = observe(CFG, state, congested, lat)
    after = observe(CFG, state, True, latency)
    assert after.limit < state.limit or after.limit == CFG.min_limit
    assert not after.slow_start


@given(signals)
def test_the_limit_recovers_once_congestion_ends(steps: list[tuple[bool, float | None]]) -> None:
    state = start(CFG)
    for congested, latency in steps:
        state = observe(CFG, state, congested, latency)
    # Analytics healthy again: its usual latency, no overload answers.
    usual = state.mean if state.mean is not None else 0.05
    for _ in range(5000):
        state = observe(CFG, state, False, usual)
    assert state.limit == CFG.max_limit


@given(st.floats(0.001, 2.0), st.integers(10, 300))
def test_steady_inputs_never_make_the_limit_fall(latency: float, n: int) -> None:
    state = start(CFG)
    previous = state.limit
    for _ in range(n):
        state = observe(CFG, state, False, latency)
        assert state.limit >= previous
        previous = state.limit


def test_slow_start_doubles_then_additive_increase() -> None:
    state = start(CFG)
    for _ in range(7):
        state = observe(CFG, state, False, 0.01)
    assert state.limit == 8 and state.slow_start
    state = observe(CFG, state, True, None)
    assert state.limit == 4 and not state.slow_start
    for _ in range(4):
        state = observe(CFG, state, False, 0.01)
    assert 4.9 < state.limit < 5.1  # +1 per window of 4


def test_latency_far_above_the_learned_band_is_congestion() -> None:
    state = start(CFG)
    for _ in range(20):
        state = observe(CFG, state, False, 0.1)
    before = state.limit
    assert observe(CFG, state, False, 0.5).limit < before
    assert observe(CFG, state, False, 0.101).limit > before


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
    budget = RetryBudget(ratio=ratio, cap=10.0, tokens=10.0)
    retries = 0
    for _ in range(firsts):
        budget = budget.first_attempt()
        ok, budget = budget.try_retry()
        retries += ok
        while ok:
            ok, budget = budget.try_retry()
            retries += ok
    assert retries <= 10 + ratio * firsts + 1e-6
