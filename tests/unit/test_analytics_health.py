"""Analytics' health from its own metrics (pure): queries, their ranges, the three states.

Unknown is never healthy; unhealthy wins over unknown; the verdict names the query
that decided and its value.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable

import pytest
from hypothesis import given
from hypothesis import strategies as st

from trackrelay.control.analytics_health import (
    LIMITS,
    SIMULATOR_QUERIES,
    HealthQuery,
    PrometheusSpec,
    Reading,
    Sample,
    Signal,
    evaluate,
    judge,
)

P99 = HealthQuery("analytics_p99", "histogram_quantile(0.99, x)", 0.0, 0.5)
SHARE = HealthQuery("error_share", "sum(rate(e[1m])) / sum(rate(r[1m]))", None, 0.05)
UP = HealthQuery("up", "min(up)", 1.0, None)
SPEC = PrometheusSpec("http://prometheus:9090", (P99, SHARE, UP))


def ok(value: float, series: str = "") -> Reading:
    return Reading((Sample(value, series),))


# -- one verdict -----------------------------------------------------------------------


def test_every_query_inside_its_range_is_healthy() -> None:
    v = evaluate(SPEC, {"analytics_p99": ok(0.1), "error_share": ok(0.0), "up": ok(1)}, 7.0)
    assert v.state is Signal.HEALTHY and v.query is None and v.at == 7.0
    assert v.why == (
        "analytics_p99 0.1 within [0, 0.5]; error_share 0 within (-inf, 0.05]; up 1 within [1, inf)"
    )
    assert v.staleness == SPEC.staleness


def test_a_query_outside_its_range_is_unhealthy_naming_it_and_its_value() -> None:
    v = evaluate(SPEC, {"analytics_p99": ok(1.8), "error_share": ok(0.0), "up": ok(1)}, 0)
    assert v.state is Signal.UNHEALTHY and v.query == "analytics_p99"
    assert v.why == "analytics_p99 1.8 outside [0, 0.5]"


def test_unhealthy_wins_over_unknown_and_names_the_first_outside_in_the_specs_order() -> None:
    results = {"analytics_p99": Reading(error="Prometheus unreachable"), "error_share": ok(0.2)}
    results["up"] = ok(0)
    v = evaluate(SPEC, results, 0)
    assert v.state is Signal.UNHEALTHY and v.query == "error_share"
    assert v.why == "error_share 0.2 outside (-inf, 0.05]; up 0 outside [1, inf)"


@pytest.mark.parametrize(
    ("reading", "says"),
    [
        (None, "analytics_p99: not read"),
        (Reading(), "analytics_p99: no data"),
        (ok(math.nan), "analytics_p99: NaN"),
        (Reading(error="Prometheus unreachable (ConnectError)"), "Prometheus unreachable"),
        (
            Reading((Sample(0.1, '{pod="a"}'), Sample(math.nan, '{pod="b"}'))),
            'analytics_p99: NaN for {pod="b"}',
        ),
    ],
)
def test_no_number_is_unknown_naming_the_query_and_why(reading: Reading | None, says: str) -> None:
    results = {"error_share": ok(0), "up": ok(1)}
    if reading is not None:
        results["analytics_p99"] = reading
    v = evaluate(SPEC, results, 0)
    assert v.state is Signal.UNKNOWN and v.query == "analytics_p99"
    assert says in v.why


def test_several_series_are_judged_by_the_worst() -> None:
    series = Reading((Sample(0.3, '{pod="a"}'), Sample(2.5, '{pod="b"}'), Sample(0.9, '{pod="c"}')))
    assert judge(P99, series).text == 'analytics_p99 2.5 {pod="b"} outside [0, 0.5]'
    inside = Reading((Sample(0.1, '{pod="a"}'), Sample(0.45, '{pod="b"}')))
    assert judge(P99, inside).text == 'analytics_p99 0.45 {pod="b"} within [0, 0.5]'
    # a NaN series does not hide another that is outside
    nan = Reading((Sample(math.nan, '{pod="a"}'), Sample(0.9, '{pod="b"}')))
    assert judge(P99, nan).state is Signal.UNHEALTHY


def test_infinities_are_values_compared_with_the_range() -> None:
    assert judge(P99, ok(math.inf)).state is Signal.UNHEALTHY  # p99 beyond the top bucket
    assert judge(UP, ok(math.inf)).state is Signal.HEALTHY
    assert judge(SHARE, ok(-math.inf)).state is Signal.HEALTHY


def test_no_queries_judge_nothing_so_unknown() -> None:
    v = evaluate(PrometheusSpec("http://p", ()), {}, 0)
    assert v.state is Signal.UNKNOWN and v.why == "no queries to judge by"


# -- properties --------------------------------------------------------------------------

values = st.one_of(
    st.floats(-3, 3), st.sampled_from([math.nan, math.inf, -math.inf]), st.floats(allow_nan=True)
)
bounds = st.one_of(st.none(), st.floats(-2, 2))


@st.composite
def queries(draw: st.DrawFn) -> HealthQuery:
    low, high = draw(bounds), draw(bounds)
    if low is None and high is None:
        high = draw(st.floats(-2, 2))
    if low is not None and high is not None and low > high:
        low, high = high, low
    return HealthQuery(
        draw(st.from_regex(r"[a-z_][a-z0-9_]{0,10}", fullmatch=True)), "q", low, high
    )


readings = st.one_of(
    st.none(),
    st.builds(Reading, error=st.sampled_from(["Prometheus unreachable", "timeout"])),
    st.lists(st.builds(Sample, values, st.sampled_from(["", '{a="1"}', '{a="2"}'])), max_size=4)
    .map(tuple)
    .map(Reading),
)


@st.composite
def cases(draw: st.DrawFn) -> tuple[PrometheusSpec, dict[str, Reading]]:
    qs = draw(st.lists(queries(), min_size=1, max_size=4, unique_by=lambda q: q.name))
    results = {}
    for q in qs:
        r = draw(readings)
        if r is not None:
            results[q.name] = r
    return PrometheusSpec("http://p", tuple(qs)), results


def _has_number_outside(q: HealthQuery, r: Reading | None) -> bool:
    return r is not None and any(
        not math.isnan(s.value) and not q.admits(s.value) for s in r.samples
    )


def _all_inside(q: HealthQuery, r: Reading | None) -> bool:
    return (
        r is not None
        and r.error is None
        and bool(r.samples)
        and all(not math.isnan(s.value) and q.admits(s.value) for s in r.samples)
    )


@given(cases())
def test_healthy_exactly_when_every_query_returned_only_numbers_inside_its_range(
    case: tuple[PrometheusSpec, dict[str, Reading]],
) -> None:
    spec, results = case
    v = evaluate(spec, results, 0)
    every = all(_all_inside(q, results.get(q.name)) for q in spec.queries)
    assert (v.state is Signal.HEALTHY) == every


@given(cases())
def test_unknown_is_never_healthy(case: tuple[PrometheusSpec, dict[str, Reading]]) -> None:
    """A query with no number (not read, an error, no data, NaN) never leaves the verdict
    healthy: it is unknown, or unhealthy when another query is outside its range."""
    spec, results = case
    v = evaluate(spec, results, 0)
    blind = [
        q
        for q in spec.queries
        if (r := results.get(q.name)) is None
        or r.error is not None
        or not r.samples
        or any(math.isnan(s.value) for s in r.samples)
    ]
    if blind:
        assert v.state is not Signal.HEALTHY
    outside = [q for q in spec.queries if _has_number_outside(q, results.get(q.name))]
    if outside:
        assert v.state is Signal.UNHEALTHY  # unhealthy wins over unknown
        assert v.query == outside[0].name and v.why.startswith(outside[0].name + " ")
    elif blind:
        assert v.state is Signal.UNKNOWN and v.query == blind[0].name
        assert v.why.startswith(blind[0].name + ":")


def inside(q: HealthQuery) -> st.SearchStrategy[float]:
    low = -1e9 if q.min is None else q.min
    high = 1e9 if q.max is None else q.max
    return st.floats(low, high)


@st.composite
def healthy(draw: st.DrawFn) -> tuple[PrometheusSpec, dict[str, Reading]]:
    """A spec and readings where every query returned numbers inside its range."""
    qs = draw(st.lists(queries(), min_size=1, max_size=4, unique_by=lambda q: q.name))
    results = {
        q.name: Reading(tuple(Sample(v) for v in draw(st.lists(inside(q), min_size=1, max_size=3))))
        for q in qs
    }
    return PrometheusSpec("http://p", tuple(qs)), results


BLINDED: dict[str, Callable[[Reading], Reading | None]] = {
    "not read": lambda r: None,
    "an error": lambda r: Reading(error="Prometheus unreachable"),
    "no data": lambda r: Reading(),
    "a NaN series": lambda r: Reading((*r.samples, Sample(math.nan, '{a="x"}'))),
}


@given(healthy(), st.data(), st.sampled_from(sorted(BLINDED)))
def test_one_query_without_a_number_makes_a_healthy_verdict_unknown(
    case: tuple[PrometheusSpec, dict[str, Reading]], data: st.DataObject, how: str
) -> None:
    spec, results = case
    assert evaluate(spec, results, 0).state is Signal.HEALTHY
    victim = data.draw(st.sampled_from(spec.queries))
    blinded = BLINDED[how](results[victim.name])
    results = {k: v for k, v in results.items() if k != victim.name}
    if blinded is not None:
        results[victim.name] = blinded
    v = evaluate(spec, results, 0)
    assert v.state is Signal.UNKNOWN and v.query == victim.name, how
    assert v.why.startswith(f"{victim.name}:")


@given(healthy(), st.data())
def test_one_value_outside_its_range_makes_any_verdict_unhealthy_naming_it(
    case: tuple[PrometheusSpec, dict[str, Reading]], data: st.DataObject
) -> None:
    spec, results = case
    victim = data.draw(st.sampled_from(spec.queries))
    out = (victim.max + 1) if victim.max is not None else victim.min - 1  # type: ignore[operator]
    results[victim.name] = Reading((*results[victim.name].samples, Sample(out, '{a="x"}')))
    for other in spec.queries:  # every other query unknown: unhealthy still wins
        if other != victim:
            results[other.name] = Reading(error="timeout")
    v = evaluate(spec, results, 0)
    assert v.state is Signal.UNHEALTHY and v.query == victim.name
    assert v.why.startswith(f"{victim.name} ") and " outside " in v.why


@given(cases(), st.randoms())
def test_the_verdict_does_not_depend_on_the_order_of_a_querys_series(
    case: tuple[PrometheusSpec, dict[str, Reading]], rnd: random.Random
) -> None:
    spec, results = case
    shuffled = {}
    for name, r in results.items():
        samples = list(r.samples)
        rnd.shuffle(samples)
        shuffled[name] = Reading(tuple(samples), r.error)
    a, b = evaluate(spec, results, 0), evaluate(spec, shuffled, 0)
    assert (a.state, a.query) == (b.state, b.query)


# -- the query syntax and problems -------------------------------------------------------


@given(queries(), st.from_regex(r"[a-z(][a-z0-9_(){}=\[\]\", .]{0,30}", fullmatch=True))
def test_a_querys_text_reads_back_as_the_same_query(query: HealthQuery, promql: str) -> None:
    q = HealthQuery(query.name, promql.strip() or "up", query.min, query.max)
    assert HealthQuery.parse(q.text()) == q


def test_the_query_syntax() -> None:
    assert HealthQuery.parse('p99[,0.5]=histogram_quantile(0.99, x{code="2.."}[1m])') == (
        HealthQuery("p99", 'histogram_quantile(0.99, x{code="2.."}[1m])', None, 0.5)
    )
    assert HealthQuery.parse(" up [1, ] = min(up) ") == HealthQuery("up", "min(up)", 1.0, None)
    assert HealthQuery.parse("share[0,0.05]=a / b") == HealthQuery("share", "a / b", 0, 0.05)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("p99=up", "p99: needs a range, NAME[MIN,MAX]=PROMQL"),
        ("just text", "expected NAME[MIN,MAX]=PROMQL"),
        ("p99[a,1]=up", "p99: min 'a' is not a number"),
        ("p99[,]=up", "p99: range: needs a min, a max or both"),
        ("p99[2,1]=up", "p99: range: min 2 is above max 1"),
        ("p99[0,1]=", "p99: query: must not be empty"),
        ("[0,1]=up", "name: must not be empty"),
        ("9lives[0,1]=up", "name: '9lives' must be letters"),
        ("p99[nan,1]=up", "p99: min: must be a number, not NaN"),
    ],
)
def test_a_bad_query_text_says_what_is_wrong(text: str, says: str) -> None:
    with pytest.raises(ValueError, match=says.replace("[", r"\[").replace("(", r"\(")):
        HealthQuery.parse(text)


def test_a_spec_lists_every_problem_by_the_callers_names() -> None:
    bad = PrometheusSpec(
        "prometheus:9090", (P99, HealthQuery("analytics_p99", "", 1, 0)), timeout=0, staleness=1e9
    )
    names = {"address": "url", "queries": "q", "timeout": "t", "staleness": "s"}
    assert bad.problems(names) == [
        "url: 'prometheus:9090' must be an http:// or https:// URL",
        "q[1].query: must not be empty",
        "q[1].range: min 1 is above max 0",
        "q[1].name: 'analytics_p99' is named twice",
        "t: must be in (0, 60]",
        "s: must be in (0, 3600]",
    ]
    assert PrometheusSpec("http://p", ()).problems() == ["queries: needs at least one query"]
    assert PrometheusSpec("https://p:9090/prom").problems() == []
    for field in LIMITS:
        spec = PrometheusSpec("http://p", **{field: math.nan})  # type: ignore[arg-type]
        assert spec.problems() == [f"{field}: must be in (0, {LIMITS[field][1]:g}]"]


def test_the_simulators_queries_are_valid_and_judge_latency_errors_and_saturation() -> None:
    spec = PrometheusSpec("http://p")
    assert spec.queries == SIMULATOR_QUERIES and spec.problems() == []
    names = [q.name for q in SIMULATOR_QUERIES]
    assert names == ["analytics_p99", "analytics_error_share", "analytics_queued_seconds"]
