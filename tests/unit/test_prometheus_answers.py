"""What an answer of Prometheus' ``/api/v1/query`` reads as: samples, or why there are none.

The answers are Prometheus' HTTP API shapes; the integration tests ask a real Prometheus.
"""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from trackrelay.control.analytics_health import Reading, Sample
from trackrelay.loop.prometheus import reading, series_text


def answer(result_type: str, result: Any) -> bytes:
    return json.dumps(
        {"status": "success", "data": {"resultType": result_type, "result": result}}
    ).encode()


def test_an_instant_vector_gives_one_sample_per_series_with_its_labels() -> None:
    body = answer(
        "vector",
        [
            {"metric": {"pod": "a", "code": "429"}, "value": [1700000000.1, "0.25"]},
            {"metric": {}, "value": [1700000000.1, "+Inf"]},
        ],
    )
    assert reading(200, body) == Reading(
        (Sample(0.25, '{code="429",pod="a"}'), Sample(math.inf, ""))
    )


def test_a_scalar_gives_one_sample() -> None:
    assert reading(200, answer("scalar", [1700000000, "3"])) == Reading((Sample(3.0),))


def test_an_empty_vector_is_no_samples_and_nan_is_a_nan_sample() -> None:
    assert reading(200, answer("vector", [])) == Reading()
    nan = reading(200, answer("vector", [{"metric": {}, "value": [1, "NaN"]}]))
    assert len(nan.samples) == 1 and math.isnan(nan.samples[0].value)


@pytest.mark.parametrize(
    ("status", "body", "says"),
    [
        (
            400,
            json.dumps(
                {"status": "error", "errorType": "bad_data", "error": "1:5: parse error: x"}
            ).encode(),
            "Prometheus answered 400: bad_data: 1:5: parse error: x",
        ),
        (503, b"<html>Service Unavailable</html>", "answered 503 with a body that is not its JSON"),
        (200, b"{not json", "answered 200 with a body that is not its JSON"),
        (200, b'{"status": "success"}', "Prometheus' answer has no data"),
        (200, answer("matrix", []), "a range vector: the query must return an instant vector"),
        (200, answer("string", [1, "x"]), "a string result, not a number"),
        (200, answer("vector", [{"metric": {}, "value": [1]}]), "a sample that is not [time"),
        (
            200,
            answer("vector", [{"metric": {}, "value": [1, "fast"]}]),
            "has a value 'fast' that is not a number",
        ),
        (200, answer("vector", [{"metric": {}, "histogram": [1, {}]}]), "native histogram"),
    ],
)
def test_an_answer_without_a_number_says_why_in_a_few_words(
    status: int, body: bytes, says: str
) -> None:
    got = reading(status, body)
    assert got.samples == () and got.error is not None
    assert says in got.error and len(got.error) < 200


def test_prometheus_own_long_error_is_cut_short() -> None:
    body = json.dumps({"status": "error", "errorType": "execution", "error": "x" * 5000}).encode()
    error = reading(422, body).error
    assert error is not None and len(error) < 200


def test_series_labels_print_as_prometheus_prints_them() -> None:
    assert series_text({"b": "2", "a": 'say "hi"'}) == '{a="say \\"hi\\"",b="2"}'
    assert series_text({}) == ""
