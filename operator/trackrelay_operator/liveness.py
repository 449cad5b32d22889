"""The liveness record: when the watch last delivered an event on a pipeline.

Every reconcile writes ``status.lastDecisionTime``, so a healthy watch sees an
event on a pipeline every few seconds; silence while pipelines exist means the
watch (or the loop) is frozen, and Kubernetes should restart the operator.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import kopf

LIVENESS_MAX_AGE = 60.0
"""Seconds without any watch event on pipelines, while some exist, that fail the probe."""


@dataclass
class Liveness:
    """When the watch last delivered an event on a pipeline."""

    last_event: float = field(default_factory=time.monotonic)

    def seen(self, now: float | None = None) -> None:
        self.last_event = time.monotonic() if now is None else now

    def report(self, pipelines: int, now: float | None = None) -> dict[str, Any]:
        """The probe's answer; raises when pipelines exist but no event came for a minute."""
        age = (time.monotonic() if now is None else now) - self.last_event
        if pipelines and age > LIVENESS_MAX_AGE:
            raise kopf.PermanentError(f"no watch event for {age:.0f} s: the watch looks frozen")
        return {"pipelines": pipelines, "last_event_seconds": round(age, 1)}
