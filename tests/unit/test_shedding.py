"""Shedding decisions (pure): sizes, unbiased sampling, exact aggregation, automatic mode."""

from __future__ import annotations

import collections

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from trackrelay.control.shedding import (
    Policy,
    Shedding,
    Thresholds,
    aggregate_id,
    automatic,
    fold,
    hash_fraction,
    parse_size,
    sampled_weight,
    window_start,
)


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
    for previous in (Shedding(), Shedding(Policy.SAMPLE, 0.5), Shedding(Policy.EVICT)):
        ordered = sorted(pressures)
        decided = [automatic(x, previous) for x in ordered]
        levels = [LEVELS.index(d.policy) for d in decided]
        assert levels == sorted(levels)
        samples = [d.p for d in decided if d.policy is Policy.SAMPLE]
        assert samples == sorted(samples, reverse=True)


@given(st.sampled_from([0.5, 0.75, 0.9]), st.lists(st.floats(-0.024, 0.024), max_size=100))
def test_automatic_mode_does_not_flap_around_a_threshold(
    threshold: float, noise: list[float]
) -> None:
    th = Thresholds()
    state = automatic(threshold + 0.001, Shedding(), th)
    level = LEVELS.index(state.policy)
    for jitter in noise:
        state = automatic(threshold + jitter, state, th)
        assert LEVELS.index(state.policy) == level


def test_automatic_mode_steps_down_once_pressure_falls_below_the_band() -> None:
    state = automatic(0.95, Shedding())
    assert state.policy is Policy.EVICT
    assert automatic(0.87, state).policy is Policy.EVICT  # within 0.05 of 0.9
    assert automatic(0.84, state).policy is Policy.AGGREGATE
    assert automatic(0.2, state) == Shedding()
    sampled = automatic(0.6, Shedding())
    assert sampled.policy is Policy.SAMPLE and 0.05 < sampled.p < 1
