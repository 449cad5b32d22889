"""A circuit breaker for analytics: closed, open, half-open (pure).

While analytics fails every push, retrying every held batch only loads it more.
After ``threshold`` consecutive failures the breaker opens: no push is sent until
``open_for`` has passed; then one probe goes out (half-open). A successful probe
closes the breaker; a failed one opens it again for twice as long, up to
``max_open``. The forwarder sends a single event as the probe
(``forwarder/pacer.py``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from enum import StrEnum


class Mode(StrEnum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass(frozen=True, slots=True)
class BreakerConfig:
    threshold: int = 5
    base_open: float = 1.0
    max_open: float = 60.0

    def __post_init__(self) -> None:
        if self.threshold < 1 or not 0 < self.base_open <= self.max_open:
            raise ValueError("need threshold >= 1 and 0 < base_open <= max_open")


@dataclass(frozen=True, slots=True)
class BreakerState:
    mode: Mode = Mode.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    open_for: float = 0.0
    probing: bool = False


def allow(config: BreakerConfig, state: BreakerState, now: float) -> tuple[bool, BreakerState]:
    """Whether a push may go out now, and the state after deciding (a probe is taken)."""
    if state.mode is Mode.CLOSED:
        return True, state
    if state.mode is Mode.OPEN:
        if now < state.opened_at + state.open_for:
            return False, state
        return True, replace(state, mode=Mode.HALF_OPEN, probing=True)
    if state.probing:
        return False, state  # one probe at a time
    return True, replace(state, probing=True)


def record(config: BreakerConfig, state: BreakerState, ok: bool, now: float) -> BreakerState:
    """The state after a push's outcome (``ok``: analytics accepted it)."""
    if ok:
        return BreakerState()
    if state.mode is Mode.HALF_OPEN:
        open_for = min(config.max_open, max(config.base_open, state.open_for * 2))
        return BreakerState(Mode.OPEN, state.failures + 1, now, open_for)
    failures = state.failures + 1
    if state.mode is Mode.CLOSED and failures >= config.threshold:
        return BreakerState(Mode.OPEN, failures, now, config.base_open)
    return replace(state, failures=failures)


def abandon(state: BreakerState) -> BreakerState:
    """A taken probe was never sent (stop, lost ownership): let another take its place."""
    if state.mode is Mode.HALF_OPEN and state.probing:
        return replace(state, probing=False)
    return state


def reopens_in(state: BreakerState, now: float) -> float:
    """Seconds until an open breaker lets a probe through (0 when it would now)."""
    if state.mode is not Mode.OPEN:
        return 0.0
    return max(0.0, state.opened_at + state.open_for - now)
