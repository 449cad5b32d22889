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

from trackrelay.control.controller import Spec
from trackrelay.control.shedding import Thresholds, parse_size

GROUP = "trackrelay.io"
VERSION = "v1alpha1"
PLURAL = "analyticspipelines"
KIND = "AnalyticsPipeline"
POLICIES = ("auto", "none", "sample", "aggregate", "evict", "drop_new")


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
    policy = shedding.get("policy", "auto")
    if policy not in POLICIES:
        raise ValueError(f"spec.queue.shedding.policy: {policy!r} is not one of {POLICIES}")
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
    b, r, a = "spec.budget", "spec.replicas", "spec.analytics"
    rmin, rmax = replicas.get("min", 1), replicas.get("max", 4)
    if not isinstance(rmin, int) or not isinstance(rmax, int):
        raise ValueError(f"{r}.min and {r}.max: must be integers")
    controller = Spec(
        budget_min=_number(budget, b, "min", 20),
        budget_max=_number(budget, b, "max", 5000),
        budget_initial=_number(budget, b, "initial", 1000),
        increase=_number(budget, b, "increase", 1.5),
        decrease=_number(budget, b, "decrease", 0.5),
        p99_target=_number(analytics, a, "latencyTargetSeconds", 0.5),
        max_error_share=_number(analytics, a, "maxErrorShare", 0.05),
        replicas_min=rmin,
        replicas_max=rmax,
        scale_up_window=_number(replicas, r, "scaleUpWindowSeconds", 4),
        scale_down_window=_number(replicas, r, "scaleDownWindowSeconds", 30),
        shedding=str(policy),
        sample_p=_number(shedding, sh, "sampleP", 0.1),
        thresholds=Thresholds(
            sample_at=_number(shedding, sh, "sampleAt", 0.4),
            aggregate_at=_number(shedding, sh, "aggregateAt", 0.4),
            evict_at=_number(shedding, sh, "evictAt", 0.9),
            hysteresis=_number(shedding, sh, "hysteresis", 0.2),
        ),
    )
    problems = controller.problems()
    if problems:
        raise ValueError("; ".join(f"spec.{p}" for p in problems))
    interval = _number(spec, "spec", "reconcileIntervalSeconds", 2.0)
    if not 0.5 <= interval <= 300:
        raise ValueError("spec.reconcileIntervalSeconds: must be within [0.5, 300]")
    return Pipeline(
        deployment=_text(fwd, "spec.forwarders", "deployment"),
        configmap=configmap,
        redis_secret=_text(secret, "spec.redis.secretRef", "name"),
        redis_key=str(secret.get("key") or "url"),
        health_url=str(health_url) if health_url else None,
        queue_quota=quota,
        interval=interval,
        controller=controller,
    )
