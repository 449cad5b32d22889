"""One pipeline's control loop in the operator: the ``ControlLoop`` local mode runs too.

Only observing and acting differ from local mode: the observer reads the
queue named by the pipeline's Secret, the actuator writes the live ConfigMap
and the forwarders' scale, the reporter tells the resource's status and
Events. A changed spec makes a new loop that goes on from the same state and
history; a bad one is reported (``Degraded``) and the last configuration stays.
"""

from __future__ import annotations

import asyncio
import logging
import time

import kopf

from trackrelay.config.configmap import BUDGET
from trackrelay.control.controller import Decision, Observation, State, initial_state, within
from trackrelay.loop.shell import ControlLoop
from trackrelay_operator import destinations
from trackrelay_operator.actuation import Actuator
from trackrelay_operator.destinations import DEFAULT_ALLOWED, DestinationRefused
from trackrelay_operator.kube import Kube
from trackrelay_operator.liveness import Liveness
from trackrelay_operator.observing import PipelineObserver
from trackrelay_operator.reporting import Reporter
from trackrelay_operator.spec import RECONCILE_INTERVAL, Pipeline, parse

log = logging.getLogger(__name__)

RETRY_SECONDS = 5.0
"""The next try after a tick that could not start (bad spec, API server away)."""


async def running_state(kube: Kube, namespace: str, pipeline: Pipeline) -> State:
    """Where a new loop starts: what runs now (the Deployment's replicas, ConfigMap's budget)."""
    spec = pipeline.controller
    replicas = await asyncio.to_thread(kube.replicas, namespace, pipeline.deployment)
    data = await asyncio.to_thread(kube.configmap_data, namespace, pipeline.configmap)
    try:
        budget = float((data or {}).get(BUDGET, "") or spec.budget_initial)
    except ValueError:
        budget = spec.budget_initial
    return initial_state(spec, replicas=replicas, budget=budget)


class PipelineRunner:
    """Ticks one pipeline every reconcile interval: observe -> decide -> act, then report."""

    def __init__(
        self,
        kube: Kube,
        body: kopf.Body,
        liveness: Liveness | None = None,
        allowed_hosts: tuple[str, ...] = DEFAULT_ALLOWED,
    ) -> None:
        self.kube = kube
        self.body = body  # a live view: kopf keeps it current
        self.namespace: str = body["metadata"]["namespace"]
        self.name: str = body["metadata"]["name"]
        self.allowed_hosts = allowed_hosts
        self.observer = PipelineObserver(kube, self.namespace, allowed_hosts)
        self.actuator = Actuator(kube, self.namespace, self.name)
        self.reporter = Reporter(kube, body, liveness=liveness)
        self.ticked_at = time.monotonic()
        """When the loop last ticked (the liveness probe checks it turns)."""
        self.interval = RECONCILE_INTERVAL
        self.pipeline: Pipeline | None = None
        self.loop: ControlLoop | None = None

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        try:
            while not stopped:
                await stopped.wait(await self.tick())
        finally:
            await self.observer.aclose()

    async def tick(self) -> float:
        """One tick; the seconds until the next."""
        self.ticked_at = time.monotonic()
        try:
            pipeline, loop = await self._prepare()
        except DestinationRefused as exc:  # nothing is connected: the old loop stops too
            await self.reporter.degraded("DestinationRefused", str(exc))
            return RETRY_SECONDS
        except ValueError as exc:
            await self.reporter.degraded("InvalidSpec", str(exc))
            return RETRY_SECONDS
        except Exception as exc:  # the API server is away: try again soon
            log.warning("pipeline %s/%s: cannot prepare: %s", self.namespace, self.name, exc)
            return RETRY_SECONDS
        await self.actuator.follow_hpa(pipeline)
        decision = await loop.tick()
        hpa = self.actuator.hpa
        await self.reporter.decision(
            decision,
            loop,
            hpa,
            self.actuator.hpa_replicas,
            prometheus=pipeline.prometheus is not None,
        )
        self.interval = pipeline.interval
        return pipeline.interval

    async def _prepare(self) -> tuple[Pipeline, ControlLoop]:
        """The spec as it is now, and its loop (a new one when the spec changed)."""
        pipeline = parse(dict(self.body["spec"]))
        destinations.check(destinations.urls_of(pipeline), self.allowed_hosts)
        old = self.loop
        if old is not None and pipeline == self.pipeline:
            return pipeline, old
        spec = pipeline.controller
        if old is not None:
            state = within(spec, old.state)
        else:
            state = await running_state(self.kube, self.namespace, pipeline)
        loop = ControlLoop(spec, self._observe, self._act, pipeline.interval, state=state)
        if old is not None:  # a new spec: the same history goes on
            loop.reasons.extend(old.reasons)
            loop.recorded = old.recorded
        self.pipeline, self.loop = pipeline, loop
        return pipeline, loop

    async def _observe(self) -> Observation:
        assert self.pipeline is not None
        return await self.observer.observe(self.pipeline)

    async def _act(self, decision: Decision) -> None:
        assert self.pipeline is not None
        await self.actuator.act(self.pipeline, decision)
