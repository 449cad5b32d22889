"""What analytics' own metrics say about its health: healthy, unhealthy or unknown (pure).

A ``Verdict`` is what the controller receives from whatever reads analytics'
metrics (Prometheus queries, a health probe). Unknown (no data, the metrics
source down, NaN) is never read as healthy.

The Prometheus part, as Flagger's metric templates and KEDA's Prometheus scaler
work: a ``PrometheusSpec`` names a server and ``HealthQuery``s, each a PromQL
expression with a threshold range; ``evaluate`` turns what each query returned
(a ``Reading``, read by ``trackrelay.loop.prometheus``) into one verdict:

- **healthy** when every query returned numbers, all inside their ranges;
- **unhealthy** when any query returned a number outside its range: the
  verdict names the first such query (in the spec's order) and its value,
  ``analytics_p99 1.8 outside [0, 0.5]``; unhealthy wins over unknown;
- **unknown** otherwise, when a query returned no data, NaN, or an error
  (Prometheus down, a refused query, a timeout): the verdict names the query
  and why. A query of several series is judged by its worst series: the one
  farthest outside the range (inside it: the one nearest an edge); a NaN series
  makes the query unknown unless another series is outside the range.

What the controller does with each state is its own: unhealthy counts as
congestion; unknown holds the last decision for the spec's ``staleness``
window (carried on the verdict), then turns conservative.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from urllib.parse import urlsplit


class Signal(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Verdict:
    state: Signal
    why: str
    """What decided, for people: "analytics_p99 1.8 outside [0, 0.5]"."""
    query: str | None = None
    """The name of the query that decided (None: no single query decided)."""
    at: float = 0.0
    """Wall-clock time the metrics were read."""
    staleness: float | None = None
    """Seconds an unknown verdict may hold the last decision before the controller turns
    conservative (the metrics source's staleness window); None: the controller's own."""


NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,62}")
"""A query's name: it shows in reasons, status and Events."""

LIMITS: dict[str, tuple[float, float]] = {"timeout": (0.0, 60.0), "staleness": (0.0, 3600.0)}
"""Each of ``PrometheusSpec``'s numbers: above the first, at most the second (the CRD's and
the chart's schema state the same, by test)."""

_SYNTAX = "NAME[MIN,MAX]=PROMQL (MIN or MAX may be empty), e.g. p99[,0.5]=histogram_quantile(...)"
_TEXT = re.compile(
    r"\s*(?P<name>[^\[\]=\s]*)\s*\[(?P<min>[^,\]]*),(?P<max>[^\]]*)\]\s*=(?P<promql>.*)", re.S
)


def number(value: float) -> str:
    """A value for people: three significant digits, whole numbers from 1000 on."""
    if math.isfinite(value) and abs(value) >= 1000:
        return f"{value:.0f}"
    return format(value, ".3g")


@dataclass(frozen=True, slots=True)
class HealthQuery:
    """One PromQL expression and the range its value must lie in for analytics to be healthy."""

    name: str
    promql: str
    min: float | None = None
    """Lowest healthy value (inclusive); None: no lower bound."""
    max: float | None = None
    """Highest healthy value (inclusive); None: no upper bound."""

    def problems(self) -> list[str]:
        """What is wrong with this query (empty when valid), each led by the field's name."""
        out = []
        if not self.name:
            out.append("name: must not be empty")
        elif not NAME.fullmatch(self.name):
            out.append(
                f"name: {self.name!r} must be letters, digits, '_', '.' or '-', starting with a"
                " letter or '_', at most 63 characters"
            )
        if not self.promql.strip():
            out.append("query: must not be empty")
        for field, value in (("min", self.min), ("max", self.max)):
            if value is not None and math.isnan(value):
                out.append(f"{field}: must be a number, not NaN")
        if self.min is None and self.max is None:
            out.append("range: needs a min, a max or both (a query without one judges nothing)")
        elif self.min is not None and self.max is not None and self.min > self.max:
            out.append(f"range: min {self.min:g} is above max {self.max:g}")
        return out

    def excess(self, value: float) -> float:
        """How far ``value`` lies outside the range (> 0), or how far inside it (<= 0, minus the
        distance to the nearer bound). NaN for NaN."""
        below = -math.inf if self.min is None else self.min - value
        above = -math.inf if self.max is None else value - self.max
        return max(below, above)

    def admits(self, value: float) -> bool:
        return self.excess(value) <= 0

    def range_text(self) -> str:
        low = "(-inf" if self.min is None else f"[{number(self.min)}"
        high = "inf)" if self.max is None else f"{number(self.max)}]"
        return f"{low}, {high}"

    def text(self) -> str:
        """The query in ``parse``'s syntax (exact: ``parse(q.text()) == q``)."""
        low = "" if self.min is None else repr(self.min)
        high = "" if self.max is None else repr(self.max)
        return f"{self.name}[{low},{high}]={self.promql}"

    @classmethod
    def parse(cls, text: str) -> HealthQuery:
        """``NAME[MIN,MAX]=PROMQL``; ``ValueError`` saying what is wrong (``problems`` too)."""
        match = _TEXT.fullmatch(text)
        if match is None:
            head = text.split("=", 1)[0].strip()
            if "=" in text and "[" not in head:
                raise ValueError(f"{head or 'a query'}: needs a range, {_SYNTAX}")
            raise ValueError(f"{text[:60]!r}: expected {_SYNTAX}")
        name = match["name"]
        bounds: list[float | None] = []
        for field in ("min", "max"):
            raw = match[field].strip()
            try:
                bounds.append(None if raw == "" else float(raw))
            except ValueError:
                raise ValueError(f"{name or 'a query'}: {field} {raw!r} is not a number") from None
        query = cls(name, match["promql"].strip(), bounds[0], bounds[1])
        problems = query.problems()
        if problems:
            raise ValueError(f"{name or 'a query'}: " + "; ".join(problems))
        return query


SIMULATOR_QUERIES: tuple[HealthQuery, ...] = (
    HealthQuery(
        "analytics_p99",
        "(histogram_quantile(0.99, sum by (le) "
        "(rate(analytics_sim_request_duration_seconds_bucket[1m]))) >= 0)"
        " or (sum(rate(analytics_sim_request_duration_seconds_count[1m])) == 0)",
        0.0,
        0.5,
    ),
    HealthQuery(
        "analytics_error_share",
        '(sum(rate(analytics_sim_requests_total{status=~"429|5.."}[1m])) or vector(0))'
        " / clamp_min(sum(rate(analytics_sim_requests_total[1m])), 1e-9)",
        0.0,
        0.05,
    ),
    HealthQuery("analytics_queued_seconds", "max(analytics_sim_queued_work_seconds)", 0.0, 0.5),
)
"""The queries used when none are given, over the metrics the simulator exports (a real
analytics service names its own): request p99 within 0.5 s, 429s and 5xx within 5 % of
responses, queued work within 0.5 s. Each reads 0 while analytics answers nothing (an idle
analytics is not a sick one) and returns no data, so unknown, when the metrics are missing.
Their ``[1m]`` windows need a scrape interval of 15 s or less."""


@dataclass(frozen=True, slots=True)
class PrometheusSpec:
    """Where analytics' metrics are and the queries that judge them."""

    address: str
    """Prometheus' base URL (``http://prometheus:9090``); queries go to ``/api/v1/query``."""
    queries: tuple[HealthQuery, ...] = SIMULATOR_QUERIES
    timeout: float = 1.0
    """Seconds one query may take; past it, that query is unknown."""
    staleness: float = 30.0
    """Seconds an unknown verdict holds the last decision before the controller turns
    conservative."""

    def problems(self, names: Mapping[str, str] | None = None) -> list[str]:
        """What is wrong with this spec (empty when valid), each field called by its name in
        ``names`` (the CRD's path, a setting's name) or else by its own."""
        names = names or {}
        out = []
        address = names.get("address", "address")
        parts = urlsplit(self.address)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            out.append(f"{address}: {self.address!r} must be an http:// or https:// URL")
        where = names.get("queries", "queries")
        if not self.queries:
            out.append(f"{where}: needs at least one query")
        seen: set[str] = set()
        for n, query in enumerate(self.queries):
            out += [f"{where}[{n}].{p}" for p in query.problems()]
            if query.name in seen:
                out.append(f"{where}[{n}].name: {query.name!r} is named twice")
            seen.add(query.name)
        for field, (low, high) in LIMITS.items():
            value = getattr(self, field)
            if not low < value <= high:  # NaN fails too
                out.append(f"{names.get(field, field)}: must be in ({low:g}, {high:g}]")
        return out


@dataclass(frozen=True, slots=True)
class Sample:
    """One series' value from a query."""

    value: float
    series: str = ""
    """The series' labels (``{pod="a"}``); empty for a scalar or a series with none."""


@dataclass(frozen=True, slots=True)
class Reading:
    """What one query returned: its samples, or why it returned none."""

    samples: tuple[Sample, ...] = ()
    error: str | None = None
    """Why there is no value (Prometheus unreachable, the query refused, a timeout)."""


@dataclass(frozen=True, slots=True)
class Judged:
    """One query's part of the verdict."""

    state: Signal
    text: str


def judge(query: HealthQuery, reading: Reading | None) -> Judged:
    """One query's state from what it returned, with the text that says why."""
    name = query.name
    if reading is None:
        return Judged(Signal.UNKNOWN, f"{name}: not read")
    if reading.error is not None:
        return Judged(Signal.UNKNOWN, f"{name}: {reading.error}")
    if not reading.samples:
        return Judged(Signal.UNKNOWN, f"{name}: no data")
    numbers = [s for s in reading.samples if not math.isnan(s.value)]
    worst = max(numbers, key=lambda s: query.excess(s.value), default=None)
    shown = "" if worst is None or len(reading.samples) == 1 else f" {worst.series}".rstrip()
    if worst is not None and not query.admits(worst.value):
        return Judged(
            Signal.UNHEALTHY,
            f"{name} {number(worst.value)}{shown} outside {query.range_text()}",
        )
    if len(numbers) < len(reading.samples):
        nan = next(s for s in reading.samples if math.isnan(s.value))
        series = "" if len(reading.samples) == 1 else f" for {nan.series or 'a series'}"
        return Judged(Signal.UNKNOWN, f"{name}: NaN{series}")
    assert worst is not None
    text = f"{name} {number(worst.value)}{shown} within {query.range_text()}"
    return Judged(Signal.HEALTHY, text)


def evaluate(spec: PrometheusSpec, results: Mapping[str, Reading], now: float) -> Verdict:
    """The verdict of ``spec``'s queries on ``results`` (by query name), read at ``now``."""
    judged = [(q.name, judge(q, results.get(q.name))) for q in spec.queries]
    for state in (Signal.UNHEALTHY, Signal.UNKNOWN):
        deciding = [(name, j) for name, j in judged if j.state is state]
        if deciding:
            why = "; ".join(j.text for _, j in deciding)
            return Verdict(state, why, deciding[0][0], now, spec.staleness)
    if not judged:
        return Verdict(Signal.UNKNOWN, "no queries to judge by", None, now, spec.staleness)
    why = "; ".join(j.text for _, j in judged)
    return Verdict(Signal.HEALTHY, why, None, now, spec.staleness)
