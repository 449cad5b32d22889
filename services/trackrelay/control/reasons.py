"""What a decision reports: analytics' health as judged, and why something changed (pure)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool | None
    """None: nothing to judge by (no pushes and no probe)."""
    why: str
    p99: float | None = None
    error_share: float = 0.0


class ReasonKind(StrEnum):
    """What a reason reports; whoever shows a reason chooses by this, never by its text."""

    BUDGET_RAISED = "budget-raised"
    BUDGET_CUT = "budget-cut"
    SCALED_UP = "scaled-up"
    SCALED_DOWN = "scaled-down"
    SHEDDING_CHANGED = "shedding-changed"
    HOLDING = "holding"
    """Fail static: no observation, or a stale one; the last decision holds."""
    OBSERVING = "observing"
    """Fresh observations again after holding (recorded by the control loop)."""
    ACTION_FAILED = "action-failed"
    """A decision could not be carried out (recorded by the control loop)."""


@dataclass(frozen=True, slots=True)
class Reason:
    """Why something changed: its kind, and the text people read (logs, status, Events)."""

    kind: ReasonKind
    text: str
