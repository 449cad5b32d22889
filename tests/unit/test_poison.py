"""A poison event is split out and dead-lettered; an outage never dead-letters anything (pure)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from trackrelay.control.poison import (
    AfterPush,
    DeadLetter,
    Delivered,
    FailureHistory,
    Resend,
    RetryAfter,
    Split,
    Step,
    after_push,
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


def test_content_refusals_split_then_dead_letter_while_others_get_through() -> None:
    for result in (BAD, TOO_LARGE, classify(422)):
        assert next_step(result, 8, failing(1), None, 3) is Step.SPLIT
        assert next_step(result, 1, failing(1, since=10), 11.0, 3) is Step.DEAD_LETTER
        # Refused everything (a WAF answering 400, say): a wait, never the DLQ.
        assert next_step(result, 1, failing(1), None, 3) is Step.RETRY
    for result in (BAD, classify(422)):
        assert next_step(result, 1, failing(1, since=10), 9.0, 3) is Step.RETRY
    # Too large alone, where analytics took pushes before: its size is refused.
    assert next_step(TOO_LARGE, 1, failing(1, since=10), 9.0, 3) is Step.DEAD_LETTER


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


def test_a_413_halves_the_push_byte_cap_only_downwards() -> None:
    assert lowered_byte_cap(None, 10_000) == 5_000
    assert lowered_byte_cap(6_000, 10_000) == 5_000
    assert lowered_byte_cap(4_000, 10_000) is None  # already lower: keep it
    assert lowered_byte_cap(None, 1) == 1


def settle(
    result: PushResult,
    size: int = 1,
    history: FailureHistory | None = None,
    last_accepted_at: float | None = None,
    *,
    honor_retry_after: bool = True,
    now: float = 20.0,
) -> AfterPush:
    return after_push(
        result,
        size,
        history or FailureHistory(),
        last_accepted_at,
        split_after=3,
        honor_retry_after=honor_retry_after,
        now=now,
    )


def test_after_push_acks_what_analytics_accepted() -> None:
    assert settle(classify(200), 5, failing(4)) == Delivered()


def test_after_push_retries_an_overload_after_its_retry_after_unless_told_not_to() -> None:
    overloaded = classify(429, "7")
    assert settle(overloaded, 5, failing(2)) == RetryAfter(overloaded, failing(2), 7.0)
    assert settle(overloaded, 5, failing(2), honor_retry_after=False) == RetryAfter(
        overloaded, failing(2), None
    )


def test_after_push_counts_a_failure_from_its_first_moment() -> None:
    # A 5xx extends the history (from now, if it is the first); an overload does not.
    assert settle(FAILED_500, 5, now=20.0) == RetryAfter(FAILED_500, FailureHistory(1, 20.0), None)
    assert settle(FAILED_500, 5, failing(1, since=10), now=20.0) == RetryAfter(
        FAILED_500, FailureHistory(2, 10.0), None
    )
    assert settle(NOT_FOUND, 1, now=20.0) == RetryAfter(NOT_FOUND, FailureHistory(1, 20.0), None)


def test_after_push_resends_what_never_went_out() -> None:
    expired = PushResult(Outcome.EXPIRED, detail="ownership window closed")
    assert settle(expired, 5, failing(9), last_accepted_at=99.0) == Resend()


def test_after_push_splits_with_the_extended_history_and_says_when_too_large() -> None:
    assert settle(TOO_LARGE, 8, failing(1, since=10)) == Split(FailureHistory(2, 10.0), True)
    assert settle(BAD, 8, now=20.0) == Split(FailureHistory(1, 20.0), False)
    # The third 5xx in a row while analytics takes other batches: split.
    assert settle(FAILED_500, 8, failing(2, since=10), last_accepted_at=15.0) == Split(
        FailureHistory(3, 10.0), False
    )


def test_after_push_dead_letters_a_lone_poison_event_with_its_reason() -> None:
    assert settle(BAD, 1, failing(1, since=10), last_accepted_at=15.0) == DeadLetter(
        "rejected by analytics: HTTP 400"
    )
    assert settle(FAILED_500, 1, failing(2, since=10), last_accepted_at=15.0) == DeadLetter(
        "failed alone while analytics accepted other events: HTTP 500"
    )


@given(
    result=failure_results,
    size=st.integers(1, 3),
    failures=st.integers(0, 5),  # around split_after (3)
    since=st.floats(0, 100),
    accepted_before=st.one_of(st.none(), st.floats(0, 200)),
)
def test_after_push_agrees_with_next_step(
    result: PushResult, size: int, failures: int, since: float, accepted_before: float | None
) -> None:
    """The step's kind is next_step's verdict on the history after this push."""
    history = FailureHistory(failures, since if failures else None)
    step = settle(result, size, history, accepted_before, now=since + 1)
    extended = history.after_failure(since + 1)
    kinds = {Delivered: Step.ACK, Split: Step.SPLIT, DeadLetter: Step.DEAD_LETTER}
    expected = next_step(result, size, extended, accepted_before, 3)
    assert kinds.get(type(step), Step.RETRY) is expected
