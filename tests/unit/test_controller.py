"""The controller's decisions: budget, replicas, shedding, fail static (pure, no I/O)."""

from __future__ import annotations

import itertools
import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackrelay.control.controller import (
    ForwarderView,
    Observation,
    Reason,
    ReasonKind,
    Spec,
    State,
    decide,
    initial_state,
    usable_replicas,
)
from trackrelay.control.shedding import Policy

SPEC = Spec(
    budget_min=20,
    budget_max=4000,
    budget_initial=800,
    replicas_min=1,
    replicas_max=6,
    scale_up_window=4,
    scale_down_window=20,
    replica_rate=200,
)


def fwd(
    p99: float | None = 0.05,
    pushes: int = 50,
    errors: int = 0,
    throttled: int = 0,
    breaker: str = "closed",
    rate: float = 100.0,
    name: str = "f0",
    limit: float = 0.0,
    p50: float | None = None,
) -> ForwarderView:
    return ForwarderView(name, pushes, p99, errors, throttled, breaker, rate, limit, p50)


def obs(
    at: float,
    lag: int = 0,
    pending: int = 0,
    forwarders: tuple[ForwarderView, ...] = (),
    queue_bytes: int | None = None,
    quota: int | None = None,
) -> Observation:
    return Observation(at, lag, pending, forwarders or (fwd(),), queue_bytes, quota)


def run(
    observations: list[Observation | None], spec: Spec = SPEC, state: State | None = None
) -> list[tuple[float, int, str, bool]]:
    state = state or initial_state(spec)
    out = []
    for i, o in enumerate(observations):
        now = o.at if o is not None else float(i)
        d, state = decide(spec, o, state, now)
        out.append((d.budget, d.replicas, d.shedding.policy.value, d.held))
    return out


def test_a_cut_is_relative_to_what_analytics_delivered_with_its_reason() -> None:
    sick = (fwd(pushes=20, throttled=5, rate=300),)
    d, _ = decide(SPEC, obs(0, lag=500, forwarders=sick), initial_state(SPEC), 0)
    assert d.budget == 150  # half of the 300 ev/s delivered, not of a budget of 800
    assert d.health.healthy is False
    assert d.reasons[0] == Reason(
        ReasonKind.BUDGET_CUT,
        "budget 800 -> 150 ev/s: analytics overloaded (429/503, timeouts) on 25% of pushes"
        " > 5%; 300 ev/s delivered",
    )


def test_budget_grows_while_healthy_with_backlog_and_holds_without_backlog() -> None:
    d, state = decide(SPEC, obs(0, lag=500, forwarders=(fwd(rate=700),)), initial_state(SPEC), 0)
    assert d.budget == 900  # above the last good rate, probing starts gently: x1.125
    assert d.reasons[0] == Reason(
        ReasonKind.BUDGET_RAISED,
        "budget 800 -> 900 ev/s: healthy, backlog 500, 700 ev/s delivered",
    )
    d, _ = decide(SPEC, obs(1, lag=0, forwarders=(fwd(rate=700),)), state, 1)
    assert d.budget == 900 and not any("budget" in r.text for r in d.reasons)
    assert not {r.kind for r in d.reasons} & {ReasonKind.BUDGET_RAISED, ReasonKind.BUDGET_CUT}


def test_a_budget_nobody_uses_does_not_grow() -> None:
    d, _ = decide(SPEC, obs(0, lag=500, forwarders=(fwd(rate=100),)), initial_state(SPEC), 0)
    assert d.budget == 800 and d.reasons == ()


def test_breakers_opened_by_overload_answers_still_cut_once() -> None:
    refused = (fwd(pushes=20, throttled=20, rate=0, breaker="open"),)
    d, state = decide(SPEC, obs(0, lag=10, forwarders=refused), initial_state(SPEC), 0)
    assert d.budget == 400 and d.reasons[0].kind is ReasonKind.BUDGET_CUT
    for t in range(1, 30):  # the breakers' probes keep being refused: one episode
        d, state = decide(SPEC, obs(t, lag=10, forwarders=refused), state, t)
    assert d.budget == 400


def test_an_episode_left_open_long_ago_does_not_stop_the_cut_for_refused_pushes() -> None:
    sick = (fwd(pushes=20, throttled=5, rate=300),)
    d, state = decide(SPEC, obs(0, lag=500, forwarders=sick), initial_state(SPEC), 0)
    assert state.memory.cut_at == 0
    for t in range(1, 60):  # idle: no pushes, so no tick closes the episode
        d, state = decide(SPEC, obs(t, forwarders=(fwd(pushes=0, rate=0),)), state, t)
    before = state.budget
    refused = (fwd(pushes=20, throttled=20, rate=0, breaker="open"),)
    d, state = decide(SPEC, obs(60, lag=10, forwarders=refused), state, 60)
    assert d.budget < before


def test_a_high_latency_alone_is_not_congestion() -> None:
    """2.3 s per push with no 429s and no queueing at analytics: slow, not overloaded."""
    slow = (fwd(p99=2.3, rate=700),)
    d, _ = decide(SPEC, obs(0, lag=500, forwarders=slow), initial_state(SPEC), 0)
    assert d.budget == 900 and d.health.healthy is True


def test_breakers_probe_failure_and_errors_hold_the_budget_for_the_return() -> None:
    for o in (
        obs(0, lag=10, forwarders=(fwd(), fwd(breaker="open", name="f1", pushes=5, errors=5))),
        Observation(0, 10, 0, (), probe_ok=False),
        obs(0, lag=10, forwarders=(fwd(pushes=20, errors=3),)),
    ):
        d, _ = decide(SPEC, o, initial_state(SPEC), 0)
        assert d.budget == 800 and d.health.healthy is False
        assert not {r.kind for r in d.reasons} & {ReasonKind.BUDGET_CUT}
    d, _ = decide(SPEC, Observation(0, 10, 0, (), probe_ok=False), initial_state(SPEC), 0)
    assert d.health.why == "analytics health probe failing"
    idle = decide(
        SPEC, obs(0, forwarders=(fwd(pushes=0, p99=None, rate=0),)), initial_state(SPEC), 0
    )
    assert idle[0].health.healthy is None


def test_missing_or_stale_observation_holds_the_last_decision_and_says_so() -> None:
    state = State(budget=600, replicas=3, per_replica=200)
    d, after = decide(SPEC, None, state, 5, missing="redis unreachable: connection refused")
    assert (d.budget, d.replicas, d.held) == (600, 3, True)
    assert after == state
    assert d.reasons == (
        Reason(
            ReasonKind.HOLDING, "holding the last decision: redis unreachable: connection refused"
        ),
    )
    d, _ = decide(SPEC, obs(0, lag=10_000, forwarders=(fwd(p99=9),)), state, 60)
    assert (d.budget, d.replicas, d.held) == (600, 3, True)
    assert "60 s old" in d.reasons[0].text and d.reasons[0].kind is ReasonKind.HOLDING


def test_replicas_scale_up_for_backlog_after_the_up_window() -> None:
    state = State(budget=4000, replicas=1, per_replica=200)
    busy = (fwd(rate=200),)
    results = []
    for t in range(6):
        d, state = decide(SPEC, obs(t, lag=30_000, forwarders=busy), state, t)
        results.append(d.replicas)
    assert results[0] == 1  # one tick of wanting more is not enough
    assert results[-1] > 1
    assert any(
        r.kind is ReasonKind.SCALED_UP and r.text.startswith("replicas 1 -> ") for r in d.reasons
    ) or (results[-2] > 1)


@pytest.mark.parametrize("gap", [1.0, 1.05, 1.5])
def test_a_down_window_no_longer_than_the_up_window_still_lets_replicas_scale(gap: float) -> None:
    """Ticks come a little more than an interval apart: the history kept for the longer
    window must still cover it (it once could not, and nothing ever scaled up)."""
    spec = Spec(replicas_max=6, scale_up_window=2, scale_down_window=1, replica_rate=200)
    state = State(budget=4000, replicas=1, per_replica=200)
    up = []
    for i in range(8):
        t = i * gap
        d, state = decide(spec, obs(t, lag=30_000, forwarders=(fwd(rate=200),)), state, t)
        up.append(d.replicas)
    assert up[0] == 1 and up[-1] > 1
    down = []
    for i in range(8, 16):
        t = i * gap
        d, state = decide(spec, obs(t, lag=0, forwarders=(fwd(rate=10),)), state, t)
        down.append(d.replicas)
    assert down[0] == up[-1] and down[-1] == 1


@pytest.mark.parametrize(("window", "first"), [(0, 0), (2, 2), (4, 4)])
def test_a_scale_up_waits_exactly_its_window(window: int, first: int) -> None:
    """With ticks a second apart, wanting more from t=0 scales at t=window, not later."""
    spec = Spec(replicas_max=6, scale_up_window=window, scale_down_window=120, replica_rate=200)
    state = State(budget=4000, replicas=1, per_replica=200)
    scaled = []
    for t in range(8):
        d, state = decide(spec, obs(t, lag=30_000, forwarders=(fwd(rate=200),)), state, t)
        scaled.append(d.replicas > 1)
    assert scaled.index(True) == first


def test_replicas_follow_what_arrives_not_only_what_is_delivered() -> None:
    """A slow analytics delivers 20 ev/s while 80 arrive: the backlog's growth counts."""
    spec = Spec(replicas_max=8, scale_up_window=0, drain_seconds=1000)
    state = State(budget=4000, replicas=1, per_replica=20)
    for t in range(6):
        o = obs(t, lag=60 * t, forwarders=(fwd(rate=20, p99=1.2),))
        d, state = decide(spec, o, state, t)
    assert d.replicas >= 4  # (20 delivered + 60 growing) / 20 per replica


def test_no_scaling_up_into_a_sick_analytics() -> None:
    state = State(budget=4000, replicas=1, per_replica=200)
    sick = (fwd(pushes=20, throttled=10, rate=50),)
    for t in range(10):
        d, state = decide(SPEC, obs(t, lag=50_000, forwarders=sick), state, t)
        assert d.replicas == 1
    assert d.budget < 4000


def test_replicas_never_exceed_what_the_budget_can_use() -> None:
    state = State(budget=300, replicas=1, per_replica=200)
    for t in range(10):
        d, state = decide(SPEC, obs(t, lag=0, forwarders=(fwd(rate=150),)), state, t)
    # healthy, no backlog: budget holds at 300; 300 / 200 -> at most 2 replicas.
    assert d.usable_replicas == 2
    state = State(budget=300, replicas=6, per_replica=200)
    d, _ = decide(SPEC, obs(0, lag=90_000, forwarders=(fwd(rate=150),)), state, 0)
    assert d.replicas <= math.ceil(d.budget / d.per_replica)
    assert "can use" in " ".join(r.text for r in d.reasons)
    assert ReasonKind.SCALED_DOWN in {r.kind for r in d.reasons}


def test_scale_down_waits_for_the_down_window() -> None:
    state = State(budget=4000, replicas=4, per_replica=200)
    seen = []
    for t in range(30):
        d, state = decide(SPEC, obs(t, lag=0, forwarders=(fwd(rate=10),)), state, t)
        seen.append(d.replicas)
    assert seen[0] == 4  # the earlier recommendations in the window were 4
    assert seen[-1] == 1


def test_shedding_follows_queue_pressure_with_hysteresis() -> None:
    quota = 1_000_000
    levels = [0.1, 0.5, 0.95, 0.85, 0.6, 0.1]
    policies = run([obs(t, queue_bytes=int(q * quota), quota=quota) for t, q in enumerate(levels)])
    assert [p for _, _, p, _ in policies] == [
        "none",
        "aggregate",
        "evict",
        "evict",  # 0.85 is inside the hysteresis band below 0.9
        "aggregate",
        "none",
    ]


def test_a_fixed_policy_is_passed_through() -> None:
    spec = Spec(shedding="sample", sample_p=0.3)
    d, _ = decide(spec, obs(0, queue_bytes=10, quota=100), initial_state(spec), 0)
    assert d.shedding.policy is Policy.SAMPLE and d.shedding.p == 0.3


def test_spec_problems_name_the_field() -> None:
    bad = Spec(budget_min=100, budget_max=10, replicas_min=3, replicas_max=2, decrease=1.5)
    problems = " | ".join(bad.problems())
    assert "budget: need 0 < min <= max" in problems
    assert "replicas: need 0 < min <= max" in problems
    assert "budget.decrease" in problems
    assert Spec().problems() == []


# -- properties ------------------------------------------------------------------------

views = st.builds(
    ForwarderView,
    name=st.sampled_from(["a", "b", "c"]),
    pushes=st.integers(0, 200),
    latency_p99=st.none() | st.floats(0, 10),
    errors=st.integers(0, 20),
    throttled=st.integers(0, 20),
    breaker=st.sampled_from(["closed", "closed", "open", "half_open"]),
    events_per_second=st.floats(0, 5000),
    limit=st.floats(0, 4000),
    latency_p50=st.none() | st.floats(0.001, 10),
)
observations = st.builds(
    Observation,
    at=st.just(0.0),
    lag=st.integers(0, 1_000_000),
    pending=st.integers(0, 10_000),
    forwarders=st.lists(views, max_size=4).map(tuple),
    queue_bytes=st.none() | st.integers(0, 2_000_000),
    queue_quota=st.none() | st.just(1_000_000),
    probe_ok=st.none() | st.booleans(),
)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.none() | observations, min_size=1, max_size=40))
def test_bounds_always_hold(seq: list[Observation | None]) -> None:
    state = initial_state(SPEC)
    for t, o in enumerate(seq):
        if o is not None:
            o = Observation(
                float(t), o.lag, o.pending, o.forwarders, o.queue_bytes, o.queue_quota, o.probe_ok
            )
        d, state = decide(SPEC, o, state, float(t))
        assert SPEC.budget_min <= d.budget <= SPEC.budget_max
        assert SPEC.replicas_min <= d.replicas <= SPEC.replicas_max
        assert d.replicas <= max(SPEC.replicas_min, math.ceil(d.budget / d.per_replica))
        assert d.replicas == usable_replicas(SPEC, d.budget, d.per_replica) or (
            d.replicas < d.usable_replicas
        )
        assert d.per_replica > 0


@settings(max_examples=200, deadline=None)
@given(st.lists(st.none() | observations, min_size=1, max_size=40))
def test_each_reason_has_the_kind_of_the_change_it_reports(seq: list[Observation | None]) -> None:
    state = initial_state(SPEC)
    for t, o in enumerate(seq):
        if o is not None:
            o = Observation(
                float(t), o.lag, o.pending, o.forwarders, o.queue_bytes, o.queue_quota, o.probe_ok
            )
        d, after = decide(SPEC, o, state, float(t))
        expected = []
        if d.held:
            expected = [ReasonKind.HOLDING]
        else:
            if d.budget != state.budget:
                up = d.budget > state.budget
                expected.append(ReasonKind.BUDGET_RAISED if up else ReasonKind.BUDGET_CUT)
            if d.replicas != state.replicas:
                up = d.replicas > state.replicas
                expected.append(ReasonKind.SCALED_UP if up else ReasonKind.SCALED_DOWN)
            if d.shedding != state.shedding:
                expected.append(ReasonKind.SHEDDING_CHANGED)
        assert [r.kind for r in d.reasons] == expected
        state = after


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1_000, 200_000),
    st.floats(50, 1000),
    st.lists(st.floats(-0.1, 0.1), min_size=60, max_size=60),
)
def test_no_flapping_under_noisy_but_steady_inputs(
    backlog: int, rate: float, noise: list[float]
) -> None:
    state = State(budget=SPEC.budget_max, replicas=1, per_replica=200)
    replicas = []
    for t, n in enumerate(noise):
        noisy = fwd(rate=rate * (1 + n), limit=rate * 0.1, p50=0.1 * (1 + n))
        o = obs(float(t), lag=int(backlog * (1 + n)), forwarders=(noisy,))
        d, state = decide(SPEC, o, state, float(t))
        replicas.append(d.replicas)
    steps = [b - a for a, b in itertools.pairwise(replicas) if b != a]
    reversals = sum(1 for a, b in itertools.pairwise(steps) if (a > 0) != (b > 0))
    # Settling while the per-replica rate is learned may overshoot once; flapping
    # (up, down, up, ...) across a boundary is what must never happen.
    assert reversals <= 1, replicas


def test_what_a_replica_can_deliver_is_its_limit_over_its_latency() -> None:
    state = State(budget=4000, replicas=2, per_replica=200)
    # 100 events in flight, pushes of 0.2 s: 500 ev/s per replica (Little's law).
    views = (fwd(limit=100, p50=0.2, name="a"), fwd(limit=100, p50=0.2, name="b"))
    d, _ = decide(SPEC, obs(0, lag=50, forwarders=views), state, 0)
    assert d.per_replica == pytest.approx(0.7 * 200 + 0.3 * 500)
    # It was seen to deliver more than that: what it did is the floor.
    fast = (fwd(limit=10, p50=1.0, rate=900, p99=0.3),)
    d, _ = decide(SPEC, obs(0, lag=50, forwarders=fast), state, 0)
    assert d.per_replica == pytest.approx(0.7 * 200 + 0.3 * 900)
    sick = (fwd(limit=100, p50=0.2, pushes=20, throttled=10),)
    d, _ = decide(SPEC, obs(0, lag=50, forwarders=sick), state, 0)
    assert d.per_replica == 200  # learned on healthy ticks only
    unknown = (fwd(rate=30),)
    d, _ = decide(SPEC, obs(0, lag=50, forwarders=unknown), state, 0)
    assert d.per_replica == 200  # no limit or latency published yet
    noise = (fwd(limit=100, p50=0.45),)  # 222 ev/s: within the dead band
    d, _ = decide(SPEC, obs(0, lag=50, forwarders=noise), state, 0)
    assert d.per_replica == 200


def test_a_small_budget_next_to_a_capable_replica_keeps_one_replica() -> None:
    """Overload: backlog grows while analytics takes little, but one replica could carry it all."""
    state = State(budget=60, replicas=1, per_replica=200)
    capable = (fwd(limit=50, p50=0.05, rate=55),)  # 1000 ev/s per replica
    for t in range(10):
        d, state = decide(SPEC, obs(t, lag=5000, forwarders=capable), state, t)
        assert d.replicas == 1
