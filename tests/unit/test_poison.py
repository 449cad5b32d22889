"""A poison event is split out and dead-lettered; an outage never dead-letters anything (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackrelay.control.poison import (
    FailureHistory,
    Step,
    lowered_byte_cap,
    next_step,
    others_accepted,
    split_to_byte_cap,
)
from trackrelay.control.push_outcome import Outcome, PushResult, classify

FAILED_500 = classify(500)
NOT_FOUND = classify(404)
BAD = classify(400)
TOO_LARGE = classify(413)


def failing(failures: int, since: float = 10.0) -> FailureHistory:
    return FailureHistory(failures, since)


def test_accepted_is_acked_and_overload_retried() -> None:
    assert next_step(classify(200), 5, FailureHistory(), None, 3) is Step.ACK
    for status in (429, 503):
        assert next_step(classify(status), 1, failing(50), 99.0, 3) is Step.RETRY
    expired = PushResult(Outcome.EXPIRED)
    assert next_step(expired, 1, failing(50), 99.0, 3) is Step.RETRY


def test_content_refusals_split_then_dead_letter_at_once() -> None:
    for result in (BAD, TOO_LARGE, classify(422)):
        assert next_step(result, 8, failing(1), None, 3) is Step.SPLIT
        assert next_step(result, 1, failing(1), None, 3) is Step.DEAD_LETTER


def test_other_4xx_dead_letters_a_lone_event_only_if_others_got_through() -> None:
    assert next_step(NOT_FOUND, 8, failing(1), None, 3) is Step.SPLIT
    assert next_step(NOT_FOUND, 1, failing(1), None, 3) is Step.RETRY  # a wrong URL: wait
    assert next_step(NOT_FOUND, 1, failing(1, since=10), 11.0, 3) is Step.DEAD_LETTER


def test_5xx_splits_after_a_few_failures_while_analytics_takes_other_batches() -> None:
    assert next_step(FAILED_500, 8, failing(2), 11.0, 3) is Step.RETRY
    assert next_step(FAILED_500, 8, failing(3), 11.0, 3) is Step.SPLIT
    assert next_step(FAILED_500, 1, failing(3), 11.0, 3) is Step.DEAD_LETTER
    # Accepted before this batch began to fail: no evidence analytics is up now.
    assert next_step(FAILED_500, 8, failing(3, since=10), 9.0, 3) is Step.RETRY


def test_failure_history_keeps_its_start() -> None:
    h = FailureHistory().after_failure(5.0).after_failure(7.0)
    assert h == FailureHistory(2, 5.0)
    assert not others_accepted(h, 5.0)
    assert others_accepted(h, 5.5)


failure_results = st.sampled_from([FAILED_500, NOT_FOUND, classify(408), classify(502)])


@given(
    result=failure_results,
    size=st.integers(1, 1000),
    failures=st.integers(1, 10_000),
    since=st.floats(0, 1e6),
    accepted_before=st.one_of(st.none(), st.floats(0, 1e6)),
    split_after=st.integers(1, 20),
)
def test_an_outage_never_dead_letters(
    result: PushResult,
    size: int,
    failures: int,
    since: float,
    accepted_before: float | None,
    split_after: int,
) -> None:
    """Nothing accepted since the batch began failing: never DLQ, never split on 5xx."""
    last = None if accepted_before is None else min(accepted_before, since)
    step = next_step(result, size, FailureHistory(failures, since), last, split_after)
    assert step is not Step.DEAD_LETTER
    if result.outcome is Outcome.FAILED:
        assert step is Step.RETRY


@given(
    sizes=st.lists(st.integers(1, 5000), max_size=300),
    budget=st.one_of(st.none(), st.integers(1, 20_000)),
)
def test_split_to_byte_cap_keeps_order_and_fits(sizes: list[int], budget: int | None) -> None:
    runs = split_to_byte_cap(sizes, budget)
    assert sum(runs) == len(sizes)
    assert all(r > 0 for r in runs)
    start = 0
    for run in runs:
        chunk = sizes[start : start + run]
        if budget is not None:
            assert run == 1 or sum(chunk) <= budget
        start += run
    if budget is None and sizes:
        assert runs == [len(sizes)]


def test_a_413_halves_the_budget_only_downwards() -> None:
    assert lowered_byte_cap(None, 10_000) == 5_000
    assert lowered_byte_cap(6_000, 10_000) == 5_000
    assert lowered_byte_cap(4_000, 10_000) is None  # already lower: keep it
    assert lowered_byte_cap(None, 1) == 1
