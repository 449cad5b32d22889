"""The liveness record: is the watch delivering, are the pipelines' loops turning?

An idle pipeline's status is written only when it changes (and every few minutes
regardless), so silence from the watch is not by itself a sign: a status write whose
event has not come back through the watch within a minute is (the watch is frozen).
A pipeline whose loop has not ticked for three intervals (at least a minute) means a
frozen loop. Either way Kubernetes should restart the operator.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import kopf

LIVENESS_MAX_AGE = 60.0
"""Seconds a status write may go without its watch event, and a loop without a tick."""


@dataclass
class Liveness:
    """When the watch last delivered an event, and the oldest write it has not delivered."""

    last_event: float = field(default_factory=time.monotonic)
    awaiting: float | None = None
    """When the oldest status write not yet followed by a watch event was made."""

    def seen(self, now: float | None = None) -> None:
        self.last_event = time.monotonic() if now is None else now
        self.awaiting = None

    def wrote(self, now: float | None = None) -> None:
        """A pipeline's status is being written: its event should come back through the
        watch. Called before the write, so that an event that beats the write's return
        clears it."""
        if self.awaiting is None:
            self.awaiting = time.monotonic() if now is None else now

    def unwrote(self) -> None:
        """The write failed: no event is owed (the next write awaits its own)."""
        self.awaiting = None

    def report(
        self,
        pipelines: int,
        now: float | None = None,
        ticks: Iterable[tuple[str, float, float]] = (),
    ) -> dict[str, Any]:
        """The probe's answer; raises when a write's event is a minute late, or a loop
        (``ticks``: name, last tick, interval) has stopped turning."""
        now = time.monotonic() if now is None else now
        age = now - self.last_event
        if pipelines and self.awaiting is not None and now - self.awaiting > LIVENESS_MAX_AGE:
            late = now - self.awaiting
            raise kopf.PermanentError(
                f"a status write has not come back through the watch in {late:.0f} s: "
                "the watch looks frozen"
            )
        for name, ticked, interval in ticks:
            if now - ticked > max(LIVENESS_MAX_AGE, 3 * interval):
                raise kopf.PermanentError(
                    f"pipeline {name} has not ticked for {now - ticked:.0f} s: its loop is frozen"
                )
        return {"pipelines": pipelines, "last_event_seconds": round(age, 1)}
