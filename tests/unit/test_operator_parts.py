"""The operator's pure parts: the spec's meaning, conditions, event reasons, the liveness rule."""

from __future__ import annotations

import time
from typing import Any

import kopf
import pytest
import yaml

from tests.cluster.test_operator import MANIFESTS
from trackrelay.control.controller import ReasonKind
from trackrelay_operator import handlers, status
from trackrelay_operator.spec import parse


def example(name: str) -> dict[str, Any]:
    body: dict[str, Any] = yaml.safe_load((MANIFESTS / f"examples/{name}.yaml").read_text())
    return dict(body["spec"])


def test_the_minimal_example_means_the_crd_defaults() -> None:
    p = parse(example("minimal"))
    assert (p.deployment, p.configmap, p.redis_secret, p.redis_key) == (
        "trackrelay-forwarder",
        "trackrelay-live",
        "trackrelay-redis",
        "url",
    )
    c = p.controller
    assert (c.budget_min, c.budget_max, c.budget_initial) == (20, 5000, 1000)
    assert (c.replicas_min, c.replicas_max, c.shedding) == (1, 4, "auto")
    assert p.queue_quota is None and p.interval == 2.0 and p.health_url is None


def test_the_full_example_is_read_field_by_field() -> None:
    p = parse(example("full"))
    assert p.queue_quota == 64 * 1024 * 1024
    assert p.health_url == "http://analytics.shop.svc:8100/healthz"
    assert p.controller.thresholds.evict_at == 0.9 and p.controller.p99_target == 0.5


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"budget": {"min": 100, "max": 10, "initial": 50}}, "spec.budget: need 0 < min <= max"),
        ({"replicas": {"min": 3, "max": 2}}, "spec.replicas: need 0 < min <= max"),
        ({"budget": {"min": "lots"}}, "spec.budget.min: must be a number"),
        ({"queue": {"shedding": {"policy": "shred"}}}, "spec.queue.shedding.policy"),
        ({"queue": {"quota": "lots"}}, "spec.queue.quota"),
        ({"reconcileIntervalSeconds": 0.1}, "spec.reconcileIntervalSeconds"),
        ({"configMap": ""}, "spec.configMap: required"),
        ({"forwarders": {}}, "spec.forwarders.deployment: required"),
    ],
)
def test_a_bad_spec_admitted_anyway_names_its_field(change: dict[str, Any], message: str) -> None:
    spec = {**example("minimal"), **change}
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        parse(spec)


def test_a_condition_keeps_its_transition_time_while_its_status_holds() -> None:
    old = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T00:00:00Z"}]
    same = status.condition(old, "Ready", True, "Reconciled", "ok")
    assert same["lastTransitionTime"] == "2026-01-01T00:00:00Z"
    flipped = status.condition(old, "Ready", False, "Holding", "redis down")
    assert flipped["lastTransitionTime"] != "2026-01-01T00:00:00Z"
    assert flipped["status"] == "False" and flipped["reason"] == "Holding"


EVENT_CLASSES = {
    ReasonKind.BUDGET_RAISED: ("BudgetChanged", "Normal"),
    ReasonKind.BUDGET_CUT: ("BudgetChanged", "Normal"),
    ReasonKind.SCALED_UP: ("ReplicasChanged", "Normal"),
    ReasonKind.SCALED_DOWN: ("ReplicasChanged", "Normal"),
    ReasonKind.SHEDDING_CHANGED: ("SheddingChanged", "Normal"),
    ReasonKind.HOLDING: ("Holding", "Warning"),
    ReasonKind.OBSERVING: ("Observing", "Normal"),
    ReasonKind.ACTION_FAILED: ("ActionFailed", "Warning"),
}


def test_each_reason_kind_has_its_event_reason_and_type() -> None:
    assert set(EVENT_CLASSES) == set(ReasonKind)
    assert {kind: tuple(status.event_class(kind)) for kind in ReasonKind} == EVENT_CLASSES


def test_liveness_fails_only_when_pipelines_exist_and_the_watch_is_silent() -> None:
    handlers.Liveness.pipelines = set()
    handlers.Liveness.last_event = time.monotonic() - 3600
    assert handlers.liveness_report()["pipelines"] == 0  # nothing to watch: alive
    handlers.Liveness.pipelines = {("ns", "shop")}
    try:
        with pytest.raises(kopf.PermanentError, match="watch looks frozen"):
            handlers.liveness_report()
        handlers.Liveness.last_event = time.monotonic()  # what the event handler records
        report = handlers.liveness_report(now=handlers.Liveness.last_event + 0.5)
        assert report["last_event_seconds"] == 0.5
    finally:
        handlers.Liveness.pipelines = set()
