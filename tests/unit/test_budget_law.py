"""The budget's law on per-tick counters: one cut per episode, no cut for a latency our
rate does not drive, a fast return to the last good rate, unknown never healthy (pure)."""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from trackrelay.control.analytics_health import Signal, Verdict
from trackrelay.control.controller import (
    Decision,
    ForwarderView,
    Observation,
    ReasonKind,
    Spec,
    State,
    decide,
    initial_state,
)
from trackrelay.control.tick import quantile
from trackrelay.events import LATENCY_BOUNDS, PushTotals

SPEC = Spec(budget_min=20, budget_max=5000, budget_initial=1000, replicas_max=1)


@dataclass
class Forwarder:
    """A forwarder's counters, advanced push by push as the pacer advances them."""

    name: str = "f0"
    totals: PushTotals = field(default_factory=lambda: PushTotals(started=1.0))
    breaker: str = "closed"

    def pushes(
        self,
        n: int,
        events: int = 50,
        latency: float = 0.05,
        congested: int = 0,
        delayed: int = 0,
        failed: int = 0,
        timeout: float | None = None,
    ) -> None:
        """``timeout``: the congested pushes timed out after that long (else: 429s)."""
        for i in range(n):
            bad = i < congested
            lost = not bad and i < congested + failed
            self.totals = self.totals.add(
                accepted_events=0 if bad or lost else events,
                congested=bad,
                failed=lost,
                latency=None if bad or lost else latency,
                delayed=not bad and not lost and i < congested + failed + delayed,
                duration=timeout if bad and timeout is not None else None,
            )

    def view(self, at: float) -> ForwarderView:
        return ForwarderView(self.name, breaker=self.breaker, at=at, totals=self.totals)


@dataclass
class Run:
    """Ticks one second apart; each tick's pushes are given, then the controller decides."""

    spec: Spec = SPEC
    fleet: Forwarder = field(default_factory=Forwarder)
    state: State = field(default_factory=lambda: initial_state(SPEC))
    t: float = 0.0
    backlog: int = 10_000
    decisions: list[Decision] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.tick()  # the first snapshot only starts the counters

    def tick(self, analytics: Verdict | None = None, **pushes: float) -> Decision:
        if pushes:
            self.fleet.pushes(**pushes)  # type: ignore[arg-type]
        o = Observation(self.t, self.backlog, 0, (self.fleet.view(self.t),), analytics=analytics)
        d, self.state = decide(self.spec, o, self.state, self.t)
        self.decisions.append(d)
        self.t += 1.0
        return d


def cuts(decisions: list[Decision]) -> int:
    return sum(r.kind is ReasonKind.BUDGET_CUT for d in decisions for r in d.reasons)


def test_the_p99_of_a_tick_comes_from_its_own_pushes() -> None:
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    counts[LATENCY_BOUNDS.index(0.05)] = 99
    counts[LATENCY_BOUNDS.index(2.0)] = 1
    assert 0.025 < (quantile(tuple(counts), 0.5) or 0) <= 0.05
    assert quantile(tuple(counts), 0.99) == 0.05
    assert 1.5 < (quantile(tuple(counts), 0.999) or 0) <= 2.0
    run = Run()
    run.tick(n=10, latency=3.0)
    d = run.tick(n=10, latency=0.02)  # the earlier slow pushes are not this tick's
    assert d.health.p99 is not None and d.health.p99 <= 0.025


def test_one_bad_second_cuts_once_and_a_later_tick_decides_again() -> None:
    run = Run()
    run.tick(n=20, events=40, latency=0.2)  # 800 ev/s delivered, healthy
    d = run.tick(n=20, events=40, latency=0.2, congested=10)
    assert d.budget == 0.5 * 400  # half of the 400 ev/s delivered in the bad second
    # The pushes the next tick sees started before the cut settled (one push latency):
    # in a real system the next snapshot starts where the cut was made.
    run.t -= 0.5
    d = run.tick(n=20, events=40, latency=0.8, congested=10)
    assert cuts(run.decisions) == 1 and "wholly after" in d.health.why
    run.t += 0.5
    d = run.tick(n=20, events=40, latency=0.2, congested=10)  # wholly after, still congested
    assert cuts(run.decisions) == 2


def test_timed_out_pushes_keep_an_episode_open_for_as_long_as_they_waited() -> None:
    run = Run()
    run.tick(n=10, events=50)
    d = run.tick(n=10, events=50, congested=10, timeout=5.0)
    assert cuts([d]) == 1
    for _ in range(5):  # pushes that waited 5 s may have been sent before the cut
        d = run.tick(n=10, events=50, congested=10, timeout=5.0)
        assert cuts([d]) == 0 and "wholly after" in d.health.why
    d = run.tick(n=10, events=50, congested=10, timeout=5.0)
    assert cuts([d]) == 1


def test_a_latency_that_stays_when_our_rate_falls_is_not_ours() -> None:
    run = Run()
    run.tick(n=10, events=60, latency=0.05)
    # Analytics becomes slow for its own reasons: every push slow and queued, and (as
    # pushes sent before it still end) our rate has not fallen yet: confirm first.
    for _ in range(3):  # pushes of 1.2 s: the tick wholly after the first is the fourth
        d = run.tick(n=10, events=60, latency=1.2, delayed=10)
        assert cuts([d]) == 0 and "confirming" in d.health.why
    # Still slow at the same rate on a tick wholly after: it may be ours; one cut.
    d = run.tick(n=10, events=60, latency=1.2, delayed=10)
    assert [r.kind for r in d.reasons] == [ReasonKind.BUDGET_CUT]
    cut = d.budget
    # Pushes of 1.2 s: the next tick wholly after the cut is the third one.
    for _ in range(2):
        d = run.tick(n=5, events=60, latency=1.2, delayed=5)
        assert d.budget == cut and "wholly after" in d.health.why
    # Our rate fell, pushes are smaller (too small to be judged queued), latency did not.
    d = run.tick(n=5, events=6, latency=1.2)
    assert d.budget > cut and "whatever our rate: not cutting" in d.reasons[0].text
    for _ in range(20):
        d = run.tick(n=5, events=60, latency=1.2, delayed=5)
        assert d.health.healthy is True and "whatever our rate" in d.health.why
    assert cuts(run.decisions) == 1


def test_latency_that_rose_as_our_rate_fell_is_not_ours_and_costs_no_cut() -> None:
    run = Run()
    run.tick(n=20, events=40, latency=0.05)  # 800 ev/s
    d = run.tick(n=3, events=40, latency=1.2, delayed=3)  # slower, and we sent less
    assert cuts([d]) == 0 and d.health.healthy is True
    assert "whatever our rate" in d.health.why
    for _ in range(10):
        d = run.tick(n=3, events=40, latency=1.2, delayed=3)
    assert cuts(run.decisions) == 0


def test_latency_that_rose_over_two_ticks_as_our_rate_fell_costs_no_cut() -> None:
    """The first tick of a slowdown mixes fast and slow pushes and stays under the
    thresholds; its lower rate must not become the reference the next tick is judged by."""
    run = Run()
    run.tick(n=20, events=40, latency=0.05)  # 800 ev/s
    first = run.tick(n=12, events=40, latency=0.4, delayed=6)  # 480 ev/s, p99 under target
    assert cuts([first]) == 0
    second = run.tick(n=10, events=40, latency=1.2, delayed=10)  # 400 ev/s, slow
    assert cuts([second]) == 0 and "whatever our rate" in second.health.why


def test_a_tick_whose_slow_pushes_are_still_in_flight_is_not_the_reference() -> None:
    """Analytics turns slow mid-tick: the next tick sees few pushes, all fast (the slow
    ones have not ended); the one after sees the slow ones at a third of the old rate."""
    run = Run()
    run.tick(n=20, events=40, latency=0.05)  # 800 ev/s
    gap = run.tick(n=2, events=40, latency=0.05)  # 80 ev/s: the rest still in flight
    assert cuts([gap]) == 0
    slow = run.tick(n=6, events=40, latency=1.2, delayed=6)  # 240 ev/s at 1.2 s
    assert cuts([slow]) == 0 and "whatever our rate" in slow.health.why


def test_a_tick_in_which_no_push_ended_is_judged_with_the_next() -> None:
    """Pushes slower than a tick end every other tick: each judged tick covers both
    seconds, so the delivered rate is the real one, not 0 then twice it."""
    run = Run()
    run.tick(n=2, events=40, latency=1.5)
    for _ in range(4):
        empty = run.tick()
        assert empty.delivered is None
        full = run.tick(n=2, events=40, latency=1.5)
        assert full.delivered == 40.0  # 80 events over two seconds


def test_after_an_outage_the_budget_is_back_at_the_last_good_rate_at_once() -> None:
    run = Run()
    for _ in range(3):
        run.tick(n=10, events=50)  # 500 ev/s taken well
    good = run.state.memory.last_good
    assert good == 500
    run.fleet.breaker = "open"
    for _ in range(30):
        d = run.tick(n=3, events=1, failed=3)
        assert d.health.healthy is False
    run.spec = SPEC
    run.state = State(
        budget=SPEC.budget_min, replicas=1, memory=run.state.memory, seen=run.state.seen
    )
    run.fleet.breaker = "closed"
    d = run.tick(n=2, events=10)  # analytics is back: probes succeed
    assert d.budget == good and "last took well" in d.reasons[0].text


def test_unknown_metrics_hold_then_turn_conservative_and_are_never_healthy() -> None:
    run = Run()
    for _ in range(3):
        run.tick(n=10, events=50)
    run.state = State(budget=3000, replicas=1, memory=run.state.memory, seen=run.state.seen)
    unknown = Verdict(Signal.UNKNOWN, "prometheus unreachable", "latency", staleness=5.0)
    held = [run.tick(unknown, n=10, events=50) for _ in range(6)]
    assert all(d.budget == 3000 and d.health.healthy is None for d in held)
    d = run.tick(unknown, n=10, events=50)
    assert d.budget == 500 and d.health.healthy is None
    assert "unknown" in d.reasons[0].text


def test_unhealthy_metrics_cut_naming_the_query() -> None:
    run = Run()
    run.tick(n=10, events=50)
    bad = Verdict(Signal.UNHEALTHY, "analytics_p99 1.8 outside [0, 0.5]", "analytics_p99")
    d = run.tick(bad, n=10, events=50)
    assert d.budget == 250 and "analytics_p99 1.8 outside [0, 0.5]" in d.reasons[0].text


def test_probing_above_the_last_good_rate_starts_gently_and_speeds_up() -> None:
    run = Run()
    run.state = State(budget=100, replicas=1)
    factors = []
    for _ in range(6):
        before = run.state.budget
        d = run.tick(n=10, events=round(before / 10))  # the fleet uses all it has
        factors.append(round(d.budget / before, 3))
    assert factors[1:] == [1.125, 1.25, 1.375, 1.5, 1.5]  # the first tick only learns


def test_unhealthy_metrics_cut_once_for_as_long_as_they_stay_unhealthy() -> None:
    run = Run()
    run.tick(n=10, events=50)
    bad = Verdict(Signal.UNHEALTHY, "analytics_queued_seconds 0.8 outside [0, 0.5]", "q")
    for _ in range(10):
        d = run.tick(bad, n=10, events=50)
    assert cuts(run.decisions) == 1 and "holding until they recover" in d.health.why
    run.tick(Verdict(Signal.HEALTHY, "ok"), n=10, events=50)
    run.tick(bad, n=10, events=50)
    assert cuts(run.decisions) == 2  # a new episode


# -- properties ------------------------------------------------------------------------

ticks = st.lists(
    st.tuples(
        st.integers(0, 30),  # pushes
        st.integers(1, 100),  # events per push
        st.floats(0.001, 4.0),  # latency
        st.floats(0, 1),  # share congested
        st.floats(0, 1),  # share delayed
        st.floats(0.1, 2.0),  # seconds since the last tick
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(ticks)
def test_one_cut_per_episode(seq: list[tuple[int, int, float, float, float, float]]) -> None:
    """A cut is only ever made on a tick whose pushes all started after the last cut."""
    run = Run()
    last_cut: float | None = None
    for n, events, latency, congested, delayed, gap in seq:
        run.t += gap - 1.0
        start = run.state.seen[0][1] if run.state.seen else None
        k = round(n * congested)
        d = run.tick(n=n, events=events, latency=latency, congested=k, delayed=round(n * delayed))
        if any(r.kind is ReasonKind.BUDGET_CUT for r in d.reasons):
            assert start is not None
            if last_cut is not None:
                assert start >= last_cut
            last_cut = run.state.memory.cut_at
        assert SPEC.budget_min <= d.budget <= SPEC.budget_max


@settings(max_examples=200, deadline=None)
@given(
    st.floats(0.6, 4.0),
    st.lists(st.tuples(st.integers(1, 30), st.floats(0.97, 1.03)), min_size=5, max_size=40),
    st.booleans(),
)
def test_no_cut_for_a_flat_latency_beyond_one_experiment(
    latency: float, load: list[tuple[int, float]], queued: bool
) -> None:
    """Analytics answers 2xx at a latency our rate does not move, no 429s: one cut at most
    (the experiment that finds it flat), undone, and the budget never at its floor."""
    run = Run()
    for n, noise in load:
        run.tick(n=n, events=20, latency=latency * noise, delayed=n if queued else 0)
    assert cuts(run.decisions) <= 1
    # At the floor, if ever, only while the experiment waits for a tick wholly after it.
    floor = [d for d in run.decisions if d.budget == SPEC.budget_min]
    assert len(floor) <= 1 + int(latency * (1 + 0.03)) + 1
    cut_at = [i for i, d in enumerate(run.decisions) if cuts([d])]
    if cut_at and len(run.decisions) - cut_at[0] - 1 >= int(latency * 1.03) + 2:
        assert any("whatever our rate" in r.text for d in run.decisions for r in d.reasons)
        assert run.decisions[-1].budget > SPEC.budget_min


@settings(max_examples=100, deadline=None)
@given(
    st.integers(1, 20),
    st.integers(50, 2000),
    st.integers(1, 60),
    st.floats(SPEC.budget_min, SPEC.budget_max),
)
def test_recovery_to_the_last_good_rate_within_one_tick(
    good_ticks: int, rate: int, outage: int, budget_then: float
) -> None:
    run = Run()
    for _ in range(good_ticks):
        run.tick(n=10, events=rate // 10)
    good = run.state.memory.last_good
    assert good is not None
    run.fleet.breaker = "open"
    for _ in range(outage):
        run.tick(n=2, events=1, failed=2)
    run.state = State(budget=budget_then, replicas=1, memory=run.state.memory, seen=run.state.seen)
    run.fleet.breaker = "closed"
    d = run.tick(n=2, events=1)
    assert d.budget >= min(SPEC.budget_max, good)


@settings(max_examples=100, deadline=None)
@given(st.lists(st.floats(-0.2, 0.2), min_size=20, max_size=60), st.floats(0.01, 0.4))
def test_no_cut_and_no_flapping_under_noisy_steady_input(noise: list[float], p99: float) -> None:
    run = Run()
    for x in noise:
        d = run.tick(n=10, events=round(50 * (1 + x)), latency=p99 * (1 + x))
        assert d.health.healthy is True
    assert cuts(run.decisions) == 0
    budgets = [d.budget for d in run.decisions]
    assert budgets == sorted(budgets)  # only ever up (while used), never up-down-up


@settings(max_examples=100, deadline=None)
@given(st.lists(st.sampled_from(list(Signal)), min_size=1, max_size=30))
def test_unknown_never_reads_as_healthy(signals: list[Signal]) -> None:
    run = Run()
    for s in signals:
        before = run.state.budget
        d = run.tick(Verdict(s, "x", "q"), n=10, events=50)
        if s is Signal.UNKNOWN:
            assert d.health.healthy is None
            assert d.budget <= before
