"""kopf handlers: thin. Validation on create/update/resume, one daemon per pipeline.

The daemon runs the same ``ControlLoop`` as local mode: it observes Redis (the
URL from the pipeline's Secret) and the forwarders' published views, decides
with ``trackrelay.control.controller.decide``, and acts through ``kube.Kube``:
the budget and shedding policy into the ConfigMap, the forwarder Deployment's
replicas through its scale subresource (unless an HPA manages it), the status
and an Event per change carrying the controller's reason.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from typing import Any

import httpx
import kopf

from trackrelay.config.configmap import BUDGET
from trackrelay.control.controller import (
    Decision,
    Observation,
    State,
    initial_state,
    within,
)
from trackrelay.control.shedding import Shedding, choose
from trackrelay.loop.observe import observe
from trackrelay.loop.shell import ControlLoop
from trackrelay.queue import client
from trackrelay.queue.client import Queue
from trackrelay_operator.kube import Kube, live_data, now_rfc3339
from trackrelay_operator.spec import GROUP, PLURAL, VERSION, Pipeline, parse
from trackrelay_operator.status import condition, event_class, pipeline_status

log = logging.getLogger(__name__)

LIVENESS_MAX_AGE = 60.0
"""Seconds without any watch event on pipelines, while some exist, that fail the liveness probe.

Every reconcile writes ``status.lastDecisionTime``, so a healthy watch sees an
event every few seconds; silence means the watch (or the loop) is frozen."""


class Liveness:
    last_event = time.monotonic()
    pipelines: set[tuple[str, str]] = set()


_kube: Kube | None = None


def kube() -> Kube:
    global _kube
    if _kube is None:
        _kube = Kube()
    return _kube


@kopf.on.startup()
def configure(settings: kopf.OperatorSettings, **_: Any) -> None:
    # Our own Events carry the controller's reasons; kopf's per-handler ones would be noise.
    settings.posting.level = logging.ERROR
    # Replicas of one operator must not share a priority, or peering cannot pick one.
    if settings.peering.priority == 0:
        settings.peering.priority = random.randint(1, 32767)
    settings.watching.server_timeout = 60
    settings.watching.client_timeout = 90


@kopf.on.cleanup()
async def release_finalizers(settings: kopf.OperatorSettings, **_: Any) -> None:
    """At exit, release the pipelines kopf holds with its finalizer.

    kopf puts a finalizer on every object with a daemon, and leaves it when the
    operator exits: a pipeline deleted while no operator runs (``helm uninstall``
    deletes both at once) would then hang in Terminating forever. The daemon holds
    nothing to clean up (the forwarders go on with the last configuration), so a
    pipeline needs no finalizer while no operator watches it; the next operator
    adds it back when it resumes.
    """
    finalizer = settings.persistence.finalizer
    for namespace, name in sorted(STEERED):
        try:
            released = await asyncio.to_thread(kube().release_finalizer, namespace, name, finalizer)
        except Exception as exc:  # exiting: report, never raise
            log.warning("could not release %s/%s: %s", namespace, name, exc)
            continue
        if released:
            log.info("released %s/%s (finalizer %s)", namespace, name, finalizer)


@kopf.on.create(GROUP, VERSION, PLURAL)
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec")
@kopf.on.resume(GROUP, VERSION, PLURAL)
async def validate(
    spec: kopf.Spec, body: kopf.Body, status: kopf.Status, patch: kopf.Patch, **_: Any
) -> None:
    """Check the spec and make sure the ConfigMap exists (its values survive a restart)."""
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
    # What the controller itself would decide with an empty queue.
    initial = live_data(
        c.budget_initial, choose(c.shedding, c.sample_p, 0.0, Shedding(), c.thresholds)
    )
    await asyncio.to_thread(
        kube().ensure_configmap,
        body["metadata"]["namespace"],
        pipeline.configmap,
        initial,
        dict(body),
    )


def liveness_report(now: float | None = None) -> dict[str, Any]:
    """The probe's answer; raises when pipelines exist but no watch event came for a minute."""
    age = (time.monotonic() if now is None else now) - Liveness.last_event
    if Liveness.pipelines and age > LIVENESS_MAX_AGE:
        raise kopf.PermanentError(f"no watch event for {age:.0f} s: the watch looks frozen")
    return {"pipelines": len(Liveness.pipelines), "last_event_seconds": round(age, 1)}


@kopf.on.event(GROUP, VERSION, PLURAL)
def seen(**_: Any) -> None:
    Liveness.last_event = time.monotonic()


@kopf.on.probe(id="watch")
def liveness(**_: Any) -> dict[str, Any]:
    """Fails the liveness endpoint (HTTP 500) when the watch looks frozen."""
    return liveness_report()


STEERED: set[tuple[str, str]] = set()
"""Every pipeline this process ran a daemon for (its finalizers are released at exit)."""


@kopf.daemon(GROUP, VERSION, PLURAL, cancellation_timeout=10.0)
async def reconcile(body: kopf.Body, stopped: kopf.DaemonStopped, **_: Any) -> None:
    key = (body["metadata"]["namespace"], body["metadata"]["name"])
    Liveness.pipelines.add(key)
    STEERED.add(key)
    try:
        await PipelineRunner(kube(), body).run(stopped)
    finally:
        Liveness.pipelines.discard(key)


class PipelineRunner:
    """One pipeline's control loop: observe -> decide -> act, every reconcile interval."""

    def __init__(self, kube: Kube, body: kopf.Body) -> None:
        self.kube = kube
        self.body = body  # a live view: kopf keeps it current
        self.namespace: str = body["metadata"]["namespace"]
        self.name: str = body["metadata"]["name"]
        self.loop: ControlLoop | None = None
        self.pipeline: Pipeline | None = None
        self.redis: Queue | None = None
        self.redis_url: str | None = None
        self.http = httpx.AsyncClient(timeout=2)
        self.hpa: str | None = None
        self.hpa_replicas = 0
        self.reported = 0
        self.problem: str | None = None

    async def call(self, fn: Any, *args: Any) -> Any:
        return await asyncio.to_thread(fn, *args)

    async def run(self, stopped: kopf.DaemonStopped) -> None:
        try:
            while not stopped:
                interval = await self.tick()
                await stopped.wait(interval)
        finally:
            await self.http.aclose()
            if self.redis is not None:
                await self.redis.aclose()

    async def _prepare(self) -> Pipeline:
        pipeline = parse(dict(self.body["spec"]))
        if self.loop is None or self.pipeline is None or pipeline != self.pipeline:
            spec = pipeline.controller
            old = self.loop
            state = (
                within(spec, old.state) if old is not None else await self._first_state(pipeline)
            )
            self.loop = ControlLoop(spec, self._observe, self._act, pipeline.interval, state=state)
            if old is not None:  # a new spec: the same history goes on
                self.loop.reasons.extend(old.reasons)
                self.loop.recorded = old.recorded
            self.pipeline = pipeline
        return pipeline

    async def _first_state(self, pipeline: Pipeline) -> State:
        """Start from what is running: the Deployment's replicas, the ConfigMap's budget."""
        spec = pipeline.controller
        replicas = await self.call(self.kube.replicas, self.namespace, pipeline.deployment)
        data = await self.call(self.kube.configmap_data, self.namespace, pipeline.configmap)
        try:
            budget = float((data or {}).get(BUDGET, "") or spec.budget_initial)
        except ValueError:
            budget = spec.budget_initial
        return initial_state(spec, replicas=replicas, budget=budget)

    async def _connect(self, pipeline: Pipeline) -> Queue:
        url = await self.call(
            self.kube.redis_url, self.namespace, pipeline.redis_secret, pipeline.redis_key
        )
        if url != self.redis_url or self.redis is None:
            if self.redis is not None:
                await self.redis.aclose()
            self.redis = client.connect(url, timeout=2)
            self.redis_url = url
        return self.redis

    async def _observe(self) -> Observation:
        assert self.pipeline is not None
        redis = await self._connect(self.pipeline)
        return await observe(redis, self.pipeline.queue_quota, self.pipeline.health_url, self.http)

    async def _act(self, decision: Decision) -> None:
        assert self.pipeline is not None
        p = self.pipeline
        data = live_data(decision.budget, decision.shedding)
        await self.call(self.kube.write_configmap, self.namespace, p.configmap, data)
        if self.hpa is None:
            current = await self.call(self.kube.replicas, self.namespace, p.deployment)
            if current != decision.replicas:
                await self.call(self.kube.scale, self.namespace, p.deployment, decision.replicas)

    async def tick(self) -> float:
        try:
            pipeline = await self._prepare()
        except ValueError as exc:
            await self._degraded("InvalidSpec", str(exc))
            return 5.0
        except Exception as exc:  # the API server is away: try again soon
            log.warning("pipeline %s/%s: cannot prepare: %s", self.namespace, self.name, exc)
            return 5.0
        assert self.loop is not None
        try:
            self.hpa = await self.call(self.kube.hpa_for, self.namespace, pipeline.deployment)
            if self.hpa is not None:
                # An HPA owns the replicas: follow it, never fight it.
                self.hpa_replicas = await self.call(
                    self.kube.replicas, self.namespace, pipeline.deployment
                )
        except Exception as exc:
            log.warning("pipeline %s/%s: cannot read HPAs: %s", self.namespace, self.name, exc)
        decision = await self.loop.tick()
        await self._report(decision)
        return pipeline.interval

    async def _degraded(self, reason: str, message: str) -> None:
        old = list((self.body.get("status") or {}).get("conditions") or [])
        status = {
            "conditions": [
                condition(old, "Degraded", True, reason, message),
                condition(old, "Ready", False, reason, message),
            ],
            "lastDecisionTime": now_rfc3339(),
        }
        try:
            await self.call(self.kube.patch_status, self.namespace, self.name, status)
            if message != self.problem:
                await self.call(self.kube.event, dict(self.body), reason, message, "Warning")
            self.problem = message
        except Exception as exc:
            log.warning("pipeline %s/%s: cannot report: %s", self.namespace, self.name, exc)

    async def _report(self, d: Decision) -> None:
        assert self.loop is not None
        status = pipeline_status(
            d,
            self.loop.observation,
            old=list((self.body.get("status") or {}).get("conditions") or []),
            reasons=[r.text for _, r in list(self.loop.reasons)[-5:]],
            generation=self.body["metadata"].get("generation"),
            hpa=self.hpa,
            hpa_replicas=self.hpa_replicas,
        )
        try:
            await self.call(self.kube.patch_status, self.namespace, self.name, status)
            for _, reason in self.loop.reasons_since(self.reported):
                shown = event_class(reason.kind)
                await self.call(
                    self.kube.event, dict(self.body), shown.reason, reason.text, shown.type
                )
            self.reported = self.loop.recorded
        except Exception as exc:
            log.warning("pipeline %s/%s: cannot report: %s", self.namespace, self.name, exc)
