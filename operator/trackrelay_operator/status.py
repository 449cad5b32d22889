"""An AnalyticsPipeline's status from a decision (pure): fields, conditions, Event reasons."""

from __future__ import annotations

from typing import Any

from trackrelay.control.controller import Decision, Observation, describe
from trackrelay_operator.kube import now_rfc3339

HEALTH = {True: "Healthy", False: "Unhealthy", None: "Unknown"}


def condition(
    old: list[dict[str, Any]], kind: str, ok: bool | None, reason: str, message: str
) -> dict[str, Any]:
    status = {True: "True", False: "False", None: "Unknown"}[ok]
    previous = next((c for c in old if c.get("type") == kind), None)
    since = (
        previous.get("lastTransitionTime")
        if previous is not None and previous.get("status") == status
        else now_rfc3339()
    )
    return {
        "type": kind,
        "status": status,
        "reason": reason,
        "message": message[:512],
        "lastTransitionTime": since,
    }


def pipeline_status(
    d: Decision,
    o: Observation | None,
    *,
    old: list[dict[str, Any]],
    reasons: list[str],
    generation: int | None,
    hpa: str | None,
    hpa_replicas: int,
) -> dict[str, Any]:
    """The status subresource for decision ``d`` (``old``: the conditions now in place)."""
    health = HEALTH[d.health.healthy]
    shedding = d.shedding.policy.value != "none"
    ready_message = d.reasons[0] if d.held else "deciding from fresh observations"
    if hpa is not None:
        ready_message = f"replicas are managed by HorizontalPodAutoscaler {hpa}: left alone"
    conditions = [
        condition(old, "Ready", not d.held, "Holding" if d.held else "Reconciled", ready_message),
        condition(old, "AnalyticsHealthy", d.health.healthy, health, d.health.why),
        condition(
            old,
            "Shedding",
            shedding,
            "Shedding" if shedding else "NotShedding",
            f"policy {describe(d.shedding)}",
        ),
        condition(
            old,
            "Degraded",
            d.held,
            "ObservationFailed" if d.held else "AsExpected",
            d.reasons[0] if d.held else "",
        ),
    ]
    status: dict[str, Any] = {
        "budget": round(d.budget, 1),
        "replicas": d.replicas if hpa is None else hpa_replicas,
        "desiredReplicas": d.replicas,
        "usableReplicas": d.usable_replicas,
        "policy": describe(d.shedding),
        "sampleP": d.shedding.p,
        "health": health,
        "healthReason": d.health.why,
        "hpa": hpa,
        "lastDecisionTime": now_rfc3339(),
        "lastReasons": reasons,
        "observedGeneration": generation,
        "conditions": conditions,
    }
    if o is not None:
        status |= {"backlog": o.backlog, "queueBytes": o.queue_bytes, "queueQuota": o.queue_quota}
    return status


def event_reason(text: str) -> str:
    for prefix, reason in (
        ("budget", "BudgetChanged"),
        ("replicas", "ReplicasChanged"),
        ("shedding", "SheddingChanged"),
        ("holding", "Holding"),
        ("observing again", "Observing"),
        ("could not", "ActionFailed"),
    ):
        if text.startswith(prefix):
            return reason
    return "Decision"
