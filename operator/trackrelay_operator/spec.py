"""An AnalyticsPipeline's spec as the controller's inputs (pure, no Kubernetes calls).

The CRD's schema rejects most bad specs at ``kubectl apply`` time; this parse
repeats the checks that matter (and applies the same defaults), so an object
admitted before a schema change, or created with validation off, gets a clear
``Degraded`` condition naming the field instead of a crash.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from trackrelay.control.analytics_health import HealthQuery, PrometheusSpec
from trackrelay.control.controller import Bound, Spec
from trackrelay.control.shedding import MODES, Thresholds, parse_size

GROUP = "trackrelay.io"
VERSION = "v1alpha1"
PLURAL = "analyticspipelines"
KIND = "AnalyticsPipeline"
RECONCILE_INTERVAL = 2.0
"""Seconds between reconciles when the spec names none (the CRD's default, by test)."""
RECONCILE_BOUND = Bound(0.5, 300)
"""The reconcile intervals admitted (the CRD's and the chart's schema, by test)."""

DEFAULT = Spec()
"""The controller's defaults: every number the spec leaves out comes from here."""

NUMBERS: tuple[tuple[str, str, str], ...] = (
    ("budget", "min", "budget_min"),
    ("budget", "max", "budget_max"),
    ("budget", "initial", "budget_initial"),
    ("budget", "increase", "increase"),
    ("budget", "decrease", "decrease"),
    ("analytics", "latencyTargetSeconds", "p99_target"),
    ("analytics", "maxErrorShare", "max_error_share"),
    ("replicas", "scaleUpWindowSeconds", "scale_up_window"),
    ("replicas", "scaleDownWindowSeconds", "scale_down_window"),
)
"""(spec section, CRD field, ``Spec`` field) for the controller's numbers."""

SHEDDING_NUMBERS: tuple[tuple[str, str], ...] = (
    ("sampleAt", "sample_at"),
    ("aggregateAt", "aggregate_at"),
    ("evictAt", "evict_at"),
    ("hysteresis", "hysteresis"),
)
"""(CRD field under ``spec.queue.shedding``, ``Thresholds`` field)."""

PROMETHEUS = "spec.analytics.prometheus"
PROMETHEUS_DEFAULT = PrometheusSpec("http://prometheus")
"""Prometheus' defaults: the timeout, the staleness window, the queries when none are given."""
PROMETHEUS_NUMBERS: tuple[tuple[str, str], ...] = (
    ("timeoutSeconds", "timeout"),
    ("stalenessSeconds", "staleness"),
)
"""(CRD field under ``spec.analytics.prometheus``, ``PrometheusSpec`` field)."""
QUERY_TEXTS: tuple[tuple[str, str], ...] = (("name", "name"), ("query", "promql"))
QUERY_BOUNDS: tuple[tuple[str, str], ...] = (("min", "min"), ("max", "max"))
"""(CRD field of one of ``spec.analytics.prometheus.queries``, ``HealthQuery`` field)."""
PROMETHEUS_NAMES: dict[str, str] = {
    "address": f"{PROMETHEUS}.address",
    "queries": f"{PROMETHEUS}.queries",
    **{attr: f"{PROMETHEUS}.{name}" for name, attr in PROMETHEUS_NUMBERS},
}
"""Each ``PrometheusSpec`` field by its path, for the problems a parse reports."""

CRD_NAMES: dict[str, str] = {
    **{attr: f"{section}.{name}" for section, name, attr in NUMBERS},
    "replicas_min": "replicas.min",
    "replicas_max": "replicas.max",
    "sample_p": "queue.shedding.sampleP",
}
"""Each ``Spec`` field by its path under ``spec``, for the problems a parse reports."""


@dataclass(frozen=True, slots=True)
class Pipeline:
    deployment: str
    configmap: str
    redis_secret: str
    redis_key: str
    health_url: str | None
    queue_quota: int | None
    interval: float
    controller: Spec
    prometheus: PrometheusSpec | None = None
    """Where analytics' metrics are read and judged (None: not read)."""


def _section(spec: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = spec.get(name) or {}
    if not isinstance(value, Mapping):
        raise ValueError(f"spec.{name}: must be an object")
    return value


def _number(section: Mapping[str, Any], where: str, name: str, default: float) -> float:
    value = section.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError(f"{where}.{name}: must be a number, not {value!r}")
    return float(value)


def _text(section: Mapping[str, Any], where: str, name: str) -> str:
    value = section.get(name)
    if not isinstance(value, str) or not value:
        raise ValueError(f"{where}.{name}: required")
    return value


def _query(item: Any, where: str) -> HealthQuery:
    if not isinstance(item, Mapping):
        raise ValueError(f"{where}: must be an object")
    texts: dict[str, str] = {}
    for name, attr in QUERY_TEXTS:
        value = item.get(name)
        if not isinstance(value, str):
            raise ValueError(f"{where}.{name}: required, a string")
        texts[attr] = value
    bounds: dict[str, float | None] = {}
    for name, attr in QUERY_BOUNDS:
        value = item.get(name)
        if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)):
            raise ValueError(f"{where}.{name}: must be a number, not {value!r}")
        bounds[attr] = None if value is None else float(value)
    return HealthQuery(texts["name"], texts["promql"], bounds["min"], bounds["max"])


def prometheus(analytics: Mapping[str, Any]) -> PrometheusSpec | None:
    """``spec.analytics.prometheus`` (None: absent); ``ValueError`` naming every problem."""
    raw = analytics.get("prometheus")
    if raw is None:
        return None
    if not isinstance(raw, Mapping):
        raise ValueError(f"{PROMETHEUS}: must be an object")
    address = _text(raw, PROMETHEUS, "address")
    listed = raw.get("queries")
    if listed is None:
        queries = PROMETHEUS_DEFAULT.queries
    elif isinstance(listed, list):
        queries = tuple(_query(q, f"{PROMETHEUS}.queries[{n}]") for n, q in enumerate(listed))
    else:
        raise ValueError(f"{PROMETHEUS}.queries: must be a list")
    numbers = {
        attr: _number(raw, PROMETHEUS, name, getattr(PROMETHEUS_DEFAULT, attr))
        for name, attr in PROMETHEUS_NUMBERS
    }
    spec = PrometheusSpec(
        address, queries, timeout=numbers["timeout"], staleness=numbers["staleness"]
    )
    problems = spec.problems(PROMETHEUS_NAMES)
    if problems:
        raise ValueError("; ".join(problems))
    return spec


def parse(spec: Mapping[str, Any]) -> Pipeline:
    """The pipeline a spec describes; ``ValueError`` naming the field (``spec.budget.min``...)."""
    fwd = _section(spec, "forwarders")
    redis = _section(spec, "redis")
    secret = redis.get("secretRef") or {}
    if not isinstance(secret, Mapping):
        raise ValueError("spec.redis.secretRef: must be an object")
    analytics = _section(spec, "analytics")
    budget = _section(spec, "budget")
    replicas = _section(spec, "replicas")
    queue = _section(spec, "queue")
    shedding = queue.get("shedding") or {}
    if not isinstance(shedding, Mapping):
        raise ValueError("spec.queue.shedding: must be an object")
    policy = shedding.get("policy", DEFAULT.shedding)
    if policy not in MODES:
        raise ValueError(f"spec.queue.shedding.policy: {policy!r} is not one of {MODES}")
    quota_text = queue.get("quota")
    try:
        quota = None if quota_text in (None, "") else parse_size(str(quota_text))
    except ValueError as exc:
        raise ValueError(f"spec.queue.quota: {exc}") from None
    configmap = spec.get("configMap")
    if not isinstance(configmap, str) or not configmap:
        raise ValueError("spec.configMap: required")
    health_url = analytics.get("healthURL")
    sh = "spec.queue.shedding"
    sections = {"budget": budget, "analytics": analytics, "replicas": replicas}
    numbers = {
        attr: _number(sections[section], f"spec.{section}", name, getattr(DEFAULT, attr))
        for section, name, attr in NUMBERS
    }
    rmin = replicas.get("min", DEFAULT.replicas_min)
    rmax = replicas.get("max", DEFAULT.replicas_max)
    if not isinstance(rmin, int) or not isinstance(rmax, int):
        raise ValueError("spec.replicas.min and spec.replicas.max: must be integers")
    levels = DEFAULT.thresholds
    controller = Spec(
        **numbers,
        replicas_min=rmin,
        replicas_max=rmax,
        shedding=str(policy),
        sample_p=_number(shedding, sh, "sampleP", DEFAULT.sample_p),
        thresholds=Thresholds(
            **{
                attr: _number(shedding, sh, name, getattr(levels, attr))
                for name, attr in SHEDDING_NUMBERS
            },
        ),
    )
    problems = controller.problems(CRD_NAMES)
    if problems:
        raise ValueError("; ".join(f"spec.{p}" for p in problems))
    interval = _number(spec, "spec", "reconcileIntervalSeconds", RECONCILE_INTERVAL)
    if not RECONCILE_BOUND.admits(interval):
        raise ValueError(f"spec.reconcileIntervalSeconds: {RECONCILE_BOUND.describe()}")
    return Pipeline(
        deployment=_text(fwd, "spec.forwarders", "deployment"),
        configmap=configmap,
        redis_secret=_text(secret, "spec.redis.secretRef", "name"),
        redis_key=str(secret.get("key") or "url"),
        health_url=str(health_url) if health_url else None,
        queue_quota=quota,
        interval=interval,
        controller=controller,
        prometheus=prometheus(analytics),
    )
