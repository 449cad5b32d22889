"""Analytics' health from Prometheus: each query of a ``PrometheusSpec`` through the HTTP API.

Every query goes to ``GET {address}/api/v1/query`` (an instant query at
Prometheus' present), all at once, each within the spec's timeout (the same
timeout is Prometheus' own ``timeout`` parameter, so it stops evaluating too).
An answer becomes a ``Reading``: an instant vector's series (each one sample,
judged by the worst: ``control.analytics_health.judge``) or a scalar. What gives
no number is that query's error, in a few words: Prometheus unreachable, timed
out, a non-200 answer (with Prometheus' own error), a body that is not its JSON,
a range vector or a string. ``evaluate`` then makes them one verdict: no data,
NaN and errors are unknown, never healthy.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from trackrelay.control.analytics_health import (
    HealthQuery,
    PrometheusSpec,
    Reading,
    Sample,
    Verdict,
    evaluate,
    number,
)

API = "/api/v1/query"
_SHORT = 120
"""Most characters of Prometheus' own error message a reason quotes."""


def query_url(spec: PrometheusSpec) -> str:
    return spec.address.rstrip("/") + API


def series_text(labels: Mapping[str, Any]) -> str:
    """A series' labels as Prometheus prints them, ``{code="429",pod="a"}`` (sorted)."""
    inner = ",".join(f"{k}={json.dumps(str(v))}" for k, v in sorted(labels.items()))
    return "{" + inner + "}" if inner else ""


def _value(pair: Any) -> float:
    """A sample ``[time, "value"]``'s value; ``ValueError`` for another shape."""
    if not isinstance(pair, list) or len(pair) != 2 or not isinstance(pair[1], str):
        raise ValueError("a sample that is not [time, value]")
    try:
        return float(pair[1])  # "NaN", "+Inf" and "-Inf" read as floats
    except ValueError:
        raise ValueError(f"a value {pair[1][:20]!r} that is not a number") from None


def reading(status: int, body: bytes) -> Reading:
    """What one ``/api/v1/query`` answer says: its samples, or why there are none."""
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        doc = None
    if not isinstance(doc, dict):
        return Reading(error=f"Prometheus answered {status} with a body that is not its JSON")
    if status != 200 or doc.get("status") != "success":
        kind, text = doc.get("errorType") or "error", str(doc.get("error") or "no message")
        return Reading(error=f"Prometheus answered {status}: {kind}: {text[:_SHORT]}")
    data = doc.get("data")
    if not isinstance(data, dict):
        return Reading(error="Prometheus' answer has no data")
    kind, result = data.get("resultType"), data.get("result")
    try:
        if kind == "scalar":
            return Reading((Sample(_value(result)),))
        if kind == "vector" and isinstance(result, list):
            samples = []
            for item in result:
                if not isinstance(item, dict) or "value" not in item:
                    return Reading(error="a series without one value (a native histogram?)")
                samples.append(Sample(_value(item["value"]), series_text(item.get("metric") or {})))
            return Reading(tuple(samples))
    except ValueError as exc:
        return Reading(error=f"Prometheus' answer has {exc}")
    if kind == "matrix":
        return Reading(error="a range vector: the query must return an instant vector or scalar")
    return Reading(error=f"a {kind} result, not a number")


async def read_query(
    client: httpx.AsyncClient, spec: PrometheusSpec, query: HealthQuery
) -> Reading:
    """One query's reading, within ``spec.timeout`` whatever happens."""
    params = {"query": query.promql, "timeout": format(spec.timeout, "g")}
    try:
        async with asyncio.timeout(spec.timeout):
            answer = await client.get(query_url(spec), params=params, timeout=spec.timeout)
    except (TimeoutError, httpx.TimeoutException):
        return Reading(error=f"Prometheus did not answer within {number(spec.timeout)} s")
    except httpx.HTTPError as exc:
        return Reading(error=f"Prometheus unreachable ({type(exc).__name__})")
    return reading(answer.status_code, answer.content)


async def read_all(client: httpx.AsyncClient, spec: PrometheusSpec) -> dict[str, Reading]:
    """Every query's reading, the queries sent at once."""
    readings = await asyncio.gather(*(read_query(client, spec, q) for q in spec.queries))
    return {q.name: r for q, r in zip(spec.queries, readings, strict=True)}


async def check(
    client: httpx.AsyncClient,
    spec: PrometheusSpec,
    clock: Callable[[], float] = time.time,
) -> Verdict:
    """The verdict of ``spec``'s queries now: healthy, unhealthy or unknown, and why."""
    results = await read_all(client, spec)
    return evaluate(spec, results, clock())
