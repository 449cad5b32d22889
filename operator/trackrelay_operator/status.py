"""An AnalyticsPipeline's status from a decision (pure): fields, conditions, Event reasons."""

from __future__ import annotations

from typing import Any, NamedTuple, assert_never

from trackrelay.control.analytics_health import Signal, Verdict
from trackrelay.control.controller import Decision, Observation, ReasonKind, describe
from trackrelay_operator.kube import now_rfc3339, rfc3339

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


def analytics_health(verdict: Verdict | None) -> dict[str, Any] | None:
    """``status.analyticsHealth``: what analytics' own metrics said, and which query decided
    (None: no Prometheus configured)."""
    if verdict is None:
        return None
    return {
        "state": verdict.state.value,
        "query": verdict.query,
        "why": verdict.why[:1024],
        "readTime": rfc3339(verdict.at),
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
    prometheus: bool = False,
) -> dict[str, Any]:
    """The status subresource for decision ``d`` (``old``: the conditions now in place).

    ``analyticsHealth`` comes from the observation's verdict; without an observation it is
    left as it was (its ``readTime`` says how old), without ``prometheus`` it is removed."""
    health = HEALTH[d.health.healthy]
    shedding = d.shedding.policy.value != "none"
    held_why = d.reasons[0].text if d.held else ""
    ready_message = held_why if d.held else "deciding from fresh observations"
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
            held_why,
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
        status |= {"outboxRows": o.outbox_rows, "outboxQuota": o.outbox_quota}
    if not prometheus:
        status["analyticsHealth"] = None  # a merge patch: removes what an earlier spec left
    elif o is not None:
        status["analyticsHealth"] = analytics_health(o.analytics)
    return status


class EventClass(NamedTuple):
    """How a controller reason shows as a core/v1 Event: its ``reason`` and ``type``."""

    reason: str
    type: str


def verdict_event(verdict: Verdict) -> tuple[EventClass, str]:
    """The Event that tells a change of analytics' metrics verdict: Normal when healthy, a
    Warning otherwise; its message names the query that decided."""
    kind = "Normal" if verdict.state is Signal.HEALTHY else "Warning"
    text = f"analytics' metrics say {verdict.state.value}: {verdict.why}"
    return EventClass("AnalyticsHealth", kind), text[:1024]


def event_class(kind: ReasonKind) -> EventClass:
    """The Event reason and type for a controller reason of ``kind`` (its text plays no part)."""
    match kind:
        case ReasonKind.BUDGET_RAISED | ReasonKind.BUDGET_CUT:
            return EventClass("BudgetChanged", "Normal")
        case ReasonKind.SCALED_UP | ReasonKind.SCALED_DOWN:
            return EventClass("ReplicasChanged", "Normal")
        case ReasonKind.SHEDDING_CHANGED:
            return EventClass("SheddingChanged", "Normal")
        case ReasonKind.HOLDING:
            return EventClass("Holding", "Warning")
        case ReasonKind.OBSERVING:
            return EventClass("Observing", "Normal")
        case ReasonKind.ACTION_FAILED:
            return EventClass("ActionFailed", "Warning")
        case _:
            assert_never(kind)
