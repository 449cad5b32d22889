"""Shedding decisions (pure): sizes, unbiased sampling, exact aggregation, automatic mode."""

from __future__ import annotations

import collections
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackrelay.control.shedding import (
    Line,
    Policy,
    Shedding,
    Thresholds,
    admit_mode,
    aggregate_event,
    aggregate_id,
    aggregate_qty,
    automatic,
    choose,
    fold,
    fold_lines,
    hash_fraction,
    outbox_excess,
    parse_size,
    plan,
    resampled_weight,
    sampled_weight,
    window_start,
)

NARROW = Thresholds(sample_at=0.5, aggregate_at=0.75, evict_at=0.9, hysteresis=0.05, min_p=0.05)
"""Levels with a narrow band, so every level and the band's edges are reachable."""


@pytest.mark.parametrize(
    ("text", "size"),
    [
        ("64MiB", 64 * 2**20),
        ("512KiB", 512 * 1024),
        ("1048576", 1048576),
        ("1.5GB", 1.5e9),
        (" 2 kb ", 2000),
    ],
)
def test_sizes_parse(text: str, size: float) -> None:
    assert parse_size(text) == int(size)


@pytest.mark.parametrize("text", ["", "MiB", "12 parsecs", "-5MiB", "0", "0.1"])
def test_bad_sizes_say_what_is_wrong(text: str) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_size(text)


def test_a_retry_makes_the_same_sampling_decision() -> None:
    for n in range(200):
        ident = f"o{n}:0"
        assert sampled_weight(ident, 1.0, 0.3) == sampled_weight(ident, 1.0, 0.3)
        assert 0 <= hash_fraction(ident) < 1


@settings(max_examples=10, deadline=None)
@given(st.floats(0.05, 1.0), st.lists(st.integers(1, 50), min_size=50, max_size=50))
def test_weighted_sampling_is_unbiased(p: float, quantities: list[int]) -> None:
    """Mean over 100 seeds of the weighted sum of kept events: the true sum, within 5%."""
    truth = sum(quantities) * 20  # 20 events per quantity value
    sums = []
    for seed in range(100):
        total = 0.0
        for n, qty in enumerate(quantities * 20):
            weight = sampled_weight(f"s{seed}-o{n}:0", 1.0, p)
            if weight is not None:
                total += qty * weight
        sums.append(total)
    assert abs(sum(sums) / len(sums) - truth) <= 0.05 * truth


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c", "d"]),
            st.integers(1, 1000),
            st.sampled_from([1.0, 2.0, 0.5, 4.0]),
            st.integers(0, 10**7),
        ),
        max_size=300,
    ),
    st.integers(1, 100_000),
)
def test_aggregation_keeps_per_sku_totals_exact(
    events: list[tuple[str, int, float, int]], window_ms: int
) -> None:
    folded = fold(events, window_ms)
    per_sku: collections.defaultdict[str, float] = collections.defaultdict(float)
    for (sku, start), total in folded.items():
        assert start % window_ms == 0
        per_sku[sku] += total
    truth: collections.defaultdict[str, float] = collections.defaultdict(float)
    for sku, qty, weight, _ in events:
        truth[sku] += qty * weight
    assert per_sku == truth  # weights are powers of two: exact in binary floating point


def test_an_aggregate_has_a_stable_id_per_sku_and_window() -> None:
    start = window_start(1_700_000_123_456, 10_000)
    assert start == 1_700_000_120_000
    assert aggregate_id("sku-1", start) == aggregate_id("sku-1", start) == "agg:1700000120000:sku-1"
    assert aggregate_id("sku-1", start) != aggregate_id("sku-1", start + 10_000)


LEVELS = [Policy.NONE, Policy.SAMPLE, Policy.AGGREGATE, Policy.EVICT]


@given(st.lists(st.floats(0, 1.5), min_size=2, max_size=50))
def test_automatic_mode_is_monotone_in_pressure(pressures: list[float]) -> None:
    """From the same previous state, more pressure never means milder shedding."""
    for th, previous in itertools.product(
        (NARROW, Thresholds()),
        (Shedding(), Shedding(Policy.SAMPLE, 0.5), Shedding(Policy.EVICT)),
    ):
        ordered = sorted(pressures)
        decided = [automatic(x, previous, th) for x in ordered]
        levels = [LEVELS.index(d.policy) for d in decided]
        assert levels == sorted(levels)
        samples = [d.p for d in decided if d.policy is Policy.SAMPLE]
        assert samples == sorted(samples, reverse=True)


@given(st.sampled_from([0.5, 0.75, 0.9]), st.lists(st.floats(-0.024, 0.024), max_size=100))
def test_automatic_mode_does_not_flap_around_a_threshold(
    threshold: float, noise: list[float]
) -> None:
    th = NARROW
    state = automatic(threshold + 0.001, Shedding(), th)
    level = LEVELS.index(state.policy)
    for jitter in noise:
        state = automatic(threshold + jitter, state, th)
        assert LEVELS.index(state.policy) == level


def test_automatic_mode_steps_down_once_pressure_falls_below_the_band() -> None:
    state = automatic(0.95, Shedding(), NARROW)
    assert state.policy is Policy.EVICT
    assert automatic(0.87, state, NARROW).policy is Policy.EVICT  # within 0.05 of 0.9
    assert automatic(0.84, state, NARROW).policy is Policy.AGGREGATE
    assert automatic(0.2, state, NARROW) == Shedding()
    sampled = automatic(0.6, Shedding(), NARROW)
    assert sampled.policy is Policy.SAMPLE and 0.05 < sampled.p < 1


def test_the_default_levels_leave_aggregation_only_well_below_where_it_began() -> None:
    th = Thresholds()
    state = automatic(th.aggregate_at, Shedding(), th)
    assert state.policy is Policy.AGGREGATE
    assert automatic(th.aggregate_at - th.hysteresis + 0.01, state, th).policy is Policy.AGGREGATE
    assert automatic(th.aggregate_at - th.hysteresis - 0.01, state, th).policy is not (
        Policy.AGGREGATE
    )


@settings(max_examples=20, deadline=None)
@given(st.floats(0.05, 1.0), st.floats(0.05, 1.0))
def test_sampling_twice_is_sampling_once_at_the_smaller_p(p1: float, p2: float) -> None:
    """Thinned in the outbox at p1, then at the stream at p2: kept with min(p1, p2),
    weight 1 / min(p1, p2), and the weighted sum stays unbiased."""
    kept = 0
    total = 0.0
    n = 20_000
    for i in range(n):
        ident = f"two-{i}"
        first = sampled_weight(ident, 1.0, p1)
        second = None if first is None else resampled_weight(ident, first, p2)
        once = sampled_weight(ident, 1.0, min(p1, p2))
        assert second == pytest.approx(once) if once is not None else second is None
        if second is not None:
            kept += 1
            total += second
    assert abs(total - n) <= 0.06 * n


def test_resampling_at_a_higher_p_changes_nothing() -> None:
    for i in range(500):
        ident = f"hi-{i}"
        w = sampled_weight(ident, 1.0, 0.2)
        if w is not None:
            assert resampled_weight(ident, w, 0.5) == w


def test_a_plan_sends_folds_or_sheds_each_event_once() -> None:
    batch = [Line(f"o{i}:0", f"sku-{i % 7}", 1 + i % 3, 1.0) for i in range(400)]
    batch.append(Line("agg:w:sku-1", "sku-1", 40, 1.0, lines=25))
    every = set(range(len(batch)))
    for shedding in (Shedding(), Shedding(Policy.EVICT), Shedding(Policy.DROP_NEW)):
        todo = plan(shedding, batch)
        assert set(todo.send) == every and not todo.fold and not todo.shed
    folded = plan(Shedding(Policy.AGGREGATE), batch)
    assert set(folded.fold) == every and not folded.send
    sampled = plan(Shedding(Policy.SAMPLE, 0.25), batch)
    assert set(sampled.send) | set(sampled.shed) == every
    assert not set(sampled.send) & set(sampled.shed)
    assert len(batch) - 1 in sampled.send and sampled.send[len(batch) - 1] is None  # aggregate
    assert 50 < len(sampled.shed) < 400
    assert all(w == 4.0 for w in sampled.send.values() if w is not None)


@given(
    st.lists(
        st.builds(
            Line,
            st.text(min_size=1, max_size=5),
            st.sampled_from(["a", "b", "c"]),
            st.integers(1, 1000),
            st.sampled_from([1.0, 2.0, 4.0, 0.5]),
            st.integers(1, 50),
        ),
        max_size=200,
    )
)
def test_folding_lines_keeps_totals_and_line_counts_exact(batch: list[Line]) -> None:
    folded = fold_lines(batch)
    for sku in {line.sku for line in batch}:
        mine = [line for line in batch if line.sku == sku]
        assert folded[sku] == (sum(x.qty * x.weight for x in mine), sum(x.lines for x in mine))
    assert set(folded) == {line.sku for line in batch}


@given(st.floats(0.01, 1e9))
def test_an_aggregates_qty_times_weight_is_its_total(total: float) -> None:
    qty, weight = aggregate_qty(total)
    assert qty >= 1 and isinstance(qty, int)
    assert qty * weight == pytest.approx(total, rel=1e-12)


def test_an_integral_total_is_sent_with_weight_one() -> None:
    assert aggregate_qty(1234.0) == (1234, 1.0)
    with pytest.raises(ValueError):
        aggregate_qty(0)


@pytest.mark.parametrize(
    ("rows", "excess"), [(0, 0), (899, 0), (900, 0), (1000, 100), (5000, 4100)]
)
def test_the_outbox_is_trimmed_to_its_evict_level(rows: int, excess: int) -> None:
    assert outbox_excess(rows, 1000, Thresholds()) == excess


def test_the_configured_policy_holds_and_auto_follows_pressure() -> None:
    th = Thresholds()
    assert choose("sample", 0.3, 0.99, Shedding(), th) == Shedding(Policy.SAMPLE, 0.3)
    assert choose("evict", 0.3, 0.0, Shedding(), th) == Shedding(Policy.EVICT)
    assert choose("auto", 0.3, 0.95, Shedding(), th) == automatic(0.95, Shedding(), th)
    with pytest.raises(ValueError):
        choose("thin", 0.3, 0.5, Shedding(), th)


def test_only_evict_and_drop_new_act_at_the_cap() -> None:
    assert admit_mode(Policy.EVICT) == "evict"
    assert admit_mode(Policy.DROP_NEW) == "drop"
    for policy in (Policy.NONE, Policy.SAMPLE, Policy.AGGREGATE):
        assert admit_mode(policy) == "hold"


def test_an_aggregate_event_carries_the_total_its_lines_and_a_stable_id() -> None:
    ev = aggregate_event("sku-1", 1700, 7.5, 4, "2026-01-01T00:00:00.000Z")
    assert ev.event_id == aggregate_id("sku-1", 1700) and ev.order_id == "agg:1700"
    assert ev.qty * ev.weight == pytest.approx(7.5) and ev.lines == 4
    assert ev.problem() is None
