"""How a pipeline's decision reaches Kubernetes: the live ConfigMap, and the replicas.

The budget and shedding policy go into the ConfigMap the forwarders and relays
watch; the replicas go through the forwarder Deployment's scale subresource,
unless a HorizontalPodAutoscaler manages that Deployment: then the HPA owns
the replicas, and the operator follows it instead of fighting it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable

from trackrelay.control.controller import Decision
from trackrelay_operator.kube import Kube, live_data
from trackrelay_operator.spec import Pipeline

log = logging.getLogger(__name__)


RESYNC = 300.0
"""Seconds after which what the operator last wrote or read (the ConfigMap, the replicas)
is written or read again even if nothing changed: an edit by hand is repaired."""
HPA_RECHECK = 120.0
"""Seconds between looks for an HPA while nothing is to be scaled (before any scale the
operator looks again)."""


class Actuator:
    """Acts on one pipeline's decisions; knows whether an HPA owns its replicas.

    Writes only what changed: an idle pipeline costs the API server a request a few
    minutes, not a few a tick (each write also wakes every forwarder's watch).
    """

    def __init__(
        self, kube: Kube, namespace: str, name: str, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.kube = kube
        self.namespace = namespace
        self.name = name
        self.clock = clock
        self.hpa: str | None = None
        """The HorizontalPodAutoscaler scaling the forwarders, if any (as last read)."""
        self.hpa_replicas = 0
        """The replicas the HPA has set (reported as the pipeline's replicas)."""
        self._hpa_at: float | None = None
        self._written: tuple[str, dict[str, str], float] | None = None
        """(ConfigMap, data, when) as last written."""
        self._replicas: tuple[str, int, float] | None = None
        """(Deployment, replicas, when) as last read or set."""

    def _stale(self, at: float) -> bool:
        return self.clock() - at >= RESYNC

    async def follow_hpa(self, pipeline: Pipeline, force: bool = False) -> None:
        """Read which HPA, if any, scales the forwarders, and the replicas it set (every
        ``HPA_RECHECK`` seconds, or now with ``force``)."""
        if not force and self._hpa_at is not None and self.clock() - self._hpa_at < HPA_RECHECK:
            return
        try:
            self.hpa = await asyncio.to_thread(
                self.kube.hpa_for, self.namespace, pipeline.deployment
            )
            if self.hpa is not None:
                self.hpa_replicas = await asyncio.to_thread(
                    self.kube.replicas, self.namespace, pipeline.deployment
                )
            self._hpa_at = self.clock()
        except Exception as exc:  # keep the last answer; the next tick reads again
            log.warning("pipeline %s/%s: cannot read HPAs: %s", self.namespace, self.name, exc)

    async def act(self, pipeline: Pipeline, decision: Decision) -> None:
        """The ConfigMap first (forwarders pace by it), then the scale if it differs; each
        only when it changed (or ``RESYNC`` has passed)."""
        data = live_data(decision.budget, decision.shedding)
        written = self._written
        if written is None or written[:2] != (pipeline.configmap, data) or self._stale(written[2]):
            await asyncio.to_thread(
                self.kube.write_configmap, self.namespace, pipeline.configmap, data
            )
            self._written = (pipeline.configmap, data, self.clock())
        known = self._replicas
        if (
            known is not None
            and known[:2] == (pipeline.deployment, decision.replicas)
            and not self._stale(known[2])
        ):
            return
        recent = self._hpa_at is not None and self.clock() - self._hpa_at < HPA_RECHECK
        if self.hpa is not None and recent:
            return  # the HPA owns the replicas
        await self.follow_hpa(pipeline, force=True)  # an HPA made since: never fight it
        if self.hpa is not None:
            self._replicas = None
            return
        current = await asyncio.to_thread(self.kube.replicas, self.namespace, pipeline.deployment)
        if current != decision.replicas:
            await asyncio.to_thread(
                self.kube.scale, self.namespace, pipeline.deployment, decision.replicas
            )
        self._replicas = (pipeline.deployment, decision.replicas, self.clock())
