"""How a pipeline's decision reaches Kubernetes: the live ConfigMap, and the replicas.

The budget and shedding policy go into the ConfigMap the forwarders and relays
watch; the replicas go through the forwarder Deployment's scale subresource,
unless a HorizontalPodAutoscaler manages that Deployment: then the HPA owns
the replicas, and the operator follows it instead of fighting it.
"""

from __future__ import annotations

import asyncio
import logging

from trackrelay.control.controller import Decision
from trackrelay_operator.kube import Kube, live_data
from trackrelay_operator.spec import Pipeline

log = logging.getLogger(__name__)


class Actuator:
    """Acts on one pipeline's decisions; knows whether an HPA owns its replicas."""

    def __init__(self, kube: Kube, namespace: str, name: str) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.hpa: str | None = None
        """The HorizontalPodAutoscaler scaling the forwarders, if any (as last read)."""
        self.hpa_replicas = 0
        """The replicas the HPA has set (reported as the pipeline's replicas)."""

    async def follow_hpa(self, pipeline: Pipeline) -> None:
        """Read which HPA, if any, scales the forwarders, and the replicas it set."""
        try:
            self.hpa = await asyncio.to_thread(
                self.kube.hpa_for, self.namespace, pipeline.deployment
            )
            if self.hpa is not None:
                self.hpa_replicas = await asyncio.to_thread(
                    self.kube.replicas, self.namespace, pipeline.deployment
                )
        except Exception as exc:  # keep the last answer; the next tick reads again
            log.warning("pipeline %s/%s: cannot read HPAs: %s", self.namespace, self.name, exc)

    async def act(self, pipeline: Pipeline, decision: Decision) -> None:
        """The ConfigMap first (forwarders pace by it), then the scale if it differs."""
        data = live_data(decision.budget, decision.shedding)
        await asyncio.to_thread(self.kube.write_configmap, self.namespace, pipeline.configmap, data)
        if self.hpa is not None:
            return
        current = await asyncio.to_thread(self.kube.replicas, self.namespace, pipeline.deployment)
        if current != decision.replicas:
            await asyncio.to_thread(
                self.kube.scale, self.namespace, pipeline.deployment, decision.replicas
            )
