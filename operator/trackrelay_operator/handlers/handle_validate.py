"""A pipeline created, changed or resumed: check its spec, make sure its ConfigMap exists.

A bad spec (one the CRD's schema let through) is marked ``Degraded`` naming the
field, and kopf stops retrying it. A good one gets its live ConfigMap with what
the controller itself would decide for an empty queue; an existing ConfigMap
keeps its values, so the forwarders go on with the last configuration across
an operator restart.
"""

from __future__ import annotations

import asyncio

import kopf

from trackrelay.control.shedding import Shedding, choose
from trackrelay_operator.kube import Kube, live_data
from trackrelay_operator.spec import parse
from trackrelay_operator.status import condition


async def validate(
    kube: Kube, spec: kopf.Spec, body: kopf.Body, status: kopf.Status, patch: kopf.Patch
) -> None:
    conditions = list(status.get("conditions") or [])
    try:
        pipeline = parse(dict(spec))
    except ValueError as exc:
        patch.status["conditions"] = [
            condition(conditions, "Degraded", True, "InvalidSpec", str(exc)),
            condition(conditions, "Ready", False, "InvalidSpec", str(exc)),
        ]
        raise kopf.PermanentError(f"invalid spec: {exc}") from None
    c = pipeline.controller
    initial = live_data(
        c.budget_initial, choose(c.shedding, c.sample_p, 0.0, Shedding(), c.thresholds)
    )
    namespace = body["metadata"]["namespace"]
    await asyncio.to_thread(
        kube.ensure_configmap, namespace, pipeline.configmap, initial, dict(body)
    )
