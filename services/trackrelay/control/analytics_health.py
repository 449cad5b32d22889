"""What analytics' own metrics say about its health: healthy, unhealthy or unknown (pure).

A ``Verdict`` is what the controller receives from whatever reads analytics'
metrics (Prometheus queries, a health probe). Unknown (no data, the metrics
source down, NaN) is never read as healthy.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Signal(StrEnum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    UNKNOWN = "unknown"


@dataclass(frozen=True, slots=True)
class Verdict:
    state: Signal
    why: str
    """What decided, for people: "analytics_p99 1.8 s outside [0, 0.5]"."""
    query: str | None = None
    """The name of the query that decided (None: no single query decided)."""
    at: float = 0.0
    """Wall-clock time the metrics were read."""
    staleness: float | None = None
    """Seconds an unknown verdict holds the last decision before the controller turns
    conservative (None: the controller's ``stale_after``)."""
