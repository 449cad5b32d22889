"""What a pipeline's controller did, told on the resource: its status and its Events.

A tick patches the status subresource (``kubectl get`` and ``describe`` show it)
when it says something new, and at least every ``RESYNC`` seconds (its
``lastDecisionTime`` says the operator still steers); every reason recorded
since the last report is told as a core/v1 Event, its Event reason and type
chosen by the reason's kind, its message the reason's text, so the status and
the Events say the same thing. A change of
the verdict of analytics' metrics (its state, or the query that decided) is told as
an ``AnalyticsHealth`` Event too, as ``status.analyticsHealth`` shows it. A repeat
bumps the Event already written, and many similar ones share one
(``correlation.py``), so a busy pipeline does not fill etcd with Events.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any

import kopf

from trackrelay.control.analytics_health import Signal
from trackrelay.control.controller import Decision, Reason
from trackrelay.loop.shell import ControlLoop
from trackrelay_operator.actuation import RESYNC
from trackrelay_operator.correlation import EventCorrelator
from trackrelay_operator.kube import Kube, now_rfc3339
from trackrelay_operator.liveness import Liveness
from trackrelay_operator.status import condition, event_class, pipeline_status, verdict_event

log = logging.getLogger(__name__)

LAST_REASONS = 5
"""How many of the latest reasons the status carries (``status.lastReasons``)."""


class Reporter:
    """Reports one pipeline's decisions, each reason told once as an Event (a new one, or a
    bump of the Event that said it already)."""

    def __init__(
        self,
        kube: Kube,
        body: kopf.Body,
        clock: Callable[[], float] = time.monotonic,
        liveness: Liveness | None = None,
    ) -> None:
        self.kube = kube
        self.clock = clock
        self.liveness = liveness
        """Told of each status write (it awaits the write's watch event)."""
        self._patched: tuple[str, float] | None = None
        """The status last patched (without its timestamps), and when."""
        self.body = body  # a live view: kopf keeps it current
        self.namespace: str = body["metadata"]["namespace"]
        self.name: str = body["metadata"]["name"]
        self.reported = 0
        """``ControlLoop.recorded`` when Events were last posted."""
        self.problem: str | None = None
        """The last problem posted as a Warning (a repeat is not posted again)."""
        self.verdict: tuple[Signal, str | None] | None = None
        """The state and deciding query of the last metrics verdict posted as an Event."""
        self.events = EventCorrelator()
        """The Events written for this pipeline: a repeat bumps, similar ones combine."""

    def _conditions(self) -> list[dict[str, Any]]:
        return list((self.body.get("status") or {}).get("conditions") or [])

    async def decision(
        self,
        d: Decision,
        loop: ControlLoop,
        hpa: str | None,
        hpa_replicas: int,
        prometheus: bool = False,
    ) -> None:
        """The status for ``d``, then an Event for each reason recorded since the last call
        (and one for a changed metrics verdict; ``prometheus``: the spec reads metrics)."""
        status = pipeline_status(
            d,
            loop.observation,
            old=self._conditions(),
            reasons=[r.text for _, r in list(loop.reasons)[-LAST_REASONS:]],
            generation=self.body["metadata"].get("generation"),
            hpa=hpa,
            hpa_replicas=hpa_replicas,
            prometheus=prometheus,
        )
        verdict = loop.observation.analytics if loop.observation is not None else None
        try:
            said = _steady(status)
            last = self._patched
            if last is None or last[0] != said or self.clock() - last[1] >= RESYNC:
                await self._patch(status)
                self._patched = (said, self.clock())
            for _, reason in loop.reasons_since(self.reported):
                await self._event(reason)
            self.reported = loop.recorded
            if verdict is not None and (verdict.state, verdict.query) != self.verdict:
                shown, text = verdict_event(verdict)
                await self.tell(shown.reason, text, shown.type)
                self.verdict = (verdict.state, verdict.query)
        except Exception as exc:  # the API server is away: the next tick reports again
            log.warning("pipeline %s/%s: cannot report: %s", self.namespace, self.name, exc)

    async def _patch(self, status: dict[str, Any]) -> None:
        if self.liveness is not None:
            self.liveness.wrote()
        try:
            await asyncio.to_thread(self.kube.patch_status, self.namespace, self.name, status)
        except Exception:
            if self.liveness is not None:
                self.liveness.unwrote()
            raise

    async def _event(self, reason: Reason) -> None:
        shown = event_class(reason.kind)
        await self.tell(shown.reason, reason.text, shown.type)

    async def tell(self, reason: str, message: str, kind: str) -> None:
        """One Event write: a new Event, or a bump of the one that said it already."""
        write = self.events.write(reason, kind, message, self.clock())
        if write.name is not None:
            bumped = await asyncio.to_thread(
                self.kube.bump_event, self.namespace, write.name, write.message, write.count
            )
            if bumped:
                self.events.written(write, write.name, self.clock())
                return
            self.events.lost(write)  # expired meanwhile: told afresh
            write = self.events.write(reason, kind, message, self.clock())
        name = await asyncio.to_thread(
            self.kube.event, dict(self.body), write.reason, write.message, write.type
        )
        self.events.written(write, name, self.clock())

    async def degraded(self, reason: str, message: str) -> None:
        """Not steering (a bad spec): Degraded and not Ready, and a Warning when it is new."""
        old = self._conditions()
        status = {
            "conditions": [
                condition(old, "Degraded", True, reason, message),
                condition(old, "Ready", False, reason, message),
            ],
            "lastDecisionTime": now_rfc3339(),
        }
        try:
            await asyncio.to_thread(self.kube.patch_status, self.namespace, self.name, status)
            self._patched = None
            if message != self.problem:
                await self.tell(reason, message, "Warning")
            self.problem = message
        except Exception as exc:
            log.warning("pipeline %s/%s: cannot report: %s", self.namespace, self.name, exc)


def _steady(status: dict[str, Any]) -> str:
    """The status without what changes on every tick by itself (its timestamps)."""
    steady = dict(status)
    steady.pop("lastDecisionTime", None)
    health = steady.get("analyticsHealth")
    if isinstance(health, dict):
        steady["analyticsHealth"] = {k: v for k, v in health.items() if k != "readTime"}
    return json.dumps(steady, sort_keys=True, default=str)
