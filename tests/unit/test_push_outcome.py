from __future__ import annotations

from datetime import UTC, datetime

import pytest

from trackrelay.control.push_outcome import (
    Outcome,
    PushResult,
    classify,
    from_answer,
    parse_retry_after,
    retry_wait,
)


@pytest.mark.parametrize(
    ("status", "outcome"),
    [
        (200, Outcome.ACCEPTED),
        (202, Outcome.ACCEPTED),
        (204, Outcome.ACCEPTED),
        (429, Outcome.OVERLOADED),
        (503, Outcome.OVERLOADED),
        (400, Outcome.REJECTED),
        (500, Outcome.FAILED),
        (502, Outcome.FAILED),
        (404, Outcome.REJECTED),
        (413, Outcome.REJECTED),
        (422, Outcome.REJECTED),
        (408, Outcome.FAILED),
        (301, Outcome.FAILED),
    ],
)
def test_classify(status: int, outcome: Outcome) -> None:
    assert classify(status).outcome is outcome


def test_retry_after_forms() -> None:
    now = datetime(2026, 1, 1, 0, 0, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after("Thu, 01 Jan 2026 00:00:30 GMT", now) == 30.0
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None
    assert classify(429, "3").retry_after == 3.0


def test_retry_wait_honours_retry_after_within_the_cap() -> None:
    assert retry_wait(0.1, 2.0, cap=10) == 2.0
    assert retry_wait(3.0, 2.0, cap=10) == 3.0
    assert retry_wait(0.1, 60.0, cap=10) == 10


@pytest.mark.parametrize(
    ("result", "congests", "up"),
    [
        (classify(200), False, True),
        (classify(429, "1"), True, False),
        (classify(503), True, False),
        (classify(400), False, True),  # refused for its content: analytics is up
        (classify(500), False, False),  # an answer: not saturation, but not a success
        (PushResult(Outcome.FAILED, detail="timeout"), True, False),  # no answer at all
        (PushResult(Outcome.EXPIRED), False, False),
    ],
)
def test_what_a_push_says_about_analytics(result: PushResult, congests: bool, up: bool) -> None:
    assert result.congests is congests
    assert result.analytics_up is up


def test_an_answer_is_read_by_its_status_a_refusal_quotes_its_body_a_redirect_its_target() -> None:
    assert from_answer(200, {}, b"<html>not json</html>").outcome is Outcome.ACCEPTED
    refused = from_answer(400, {}, b"blocked by policy" + b"x" * 1000)
    assert refused.outcome is Outcome.REJECTED and refused.status == 400
    assert refused.detail.startswith("HTTP 400: blocked by policy") and len(refused.detail) < 520
    moved = from_answer(301, {"location": "http://elsewhere/v1/track"}, b"")
    assert moved.outcome is Outcome.FAILED and moved.status == 301
    assert "redirects to http://elsewhere/v1/track" in moved.detail
    assert "(no Location)" in from_answer(302, {}, b"").detail
    assert from_answer(429, {"retry-after": "3"}, b"").retry_after == 3.0
