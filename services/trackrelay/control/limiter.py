"""Adaptive concurrency for pushes: slow start, then AIMD on congestion (pure).

The fast control loop of DESIGN.md, as numbers in and numbers out, for the
adaptive-delivery work (issue 8) to wire into the forwarder. One ``observe`` per
finished push:

- congestion (429/503, timeout, reset, or latency above the learned no-load
  latency by more than ``tolerance`` deviations): the limit is multiplied by
  ``decrease`` and slow start ends;
- success in slow start: +1 per success (the limit doubles every window);
- success afterwards: +1/limit per success (+1 per window: additive increase).

The no-load latency is an exponentially weighted mean with a deviation band
(as Vector's adaptive request concurrency keeps), learned from uncongested
successes only, so congestion cannot teach it that slow is normal. The limit
always stays within ``[min_limit, max_limit]``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class LimiterConfig:
    min_limit: float = 1.0
    max_limit: float = 64.0
    initial: float = 1.0
    decrease: float = 0.5
    alpha: float = 0.1
    """Weight of a new latency sample in the moving mean and deviation."""
    tolerance: float = 3.0
    """Deviations above the mean latency that count as congestion."""
    warmup: int = 5
    """Successes before latency can signal congestion (the mean needs samples)."""

    def __post_init__(self) -> None:
        if not 0 < self.min_limit <= self.initial <= self.max_limit:
            raise ValueError("need 0 < min_limit <= initial <= max_limit")
        if not 0 < self.decrease < 1:
            raise ValueError("decrease must be in (0, 1)")
        if not 0 < self.alpha <= 1:
            raise ValueError("alpha must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class LimiterState:
    limit: float
    slow_start: bool = True
    mean: float | None = None
    deviation: float = 0.0
    samples: int = 0

    @property
    def permits(self) -> int:
        """Pushes allowed in flight now: the limit rounded down, at least one."""
        return max(1, int(self.limit))


def start(config: LimiterConfig) -> LimiterState:
    return LimiterState(limit=config.initial)


def is_slow(config: LimiterConfig, state: LimiterState, latency: float) -> bool:
    """Whether ``latency`` lies above the learned no-load band."""
    if state.mean is None or state.samples < config.warmup:
        return False
    band = config.tolerance * max(state.deviation, 0.05 * state.mean)
    return latency > state.mean + band


def observe(
    config: LimiterConfig, state: LimiterState, congested: bool, latency: float | None
) -> LimiterState:
    """The state after one push: ``congested`` for overload answers, timeouts, resets."""
    if congested or (latency is not None and is_slow(config, state, latency)):
        limit = max(config.min_limit, state.limit * config.decrease)
        return replace(state, limit=limit, slow_start=False)
    step = 1.0 if state.slow_start else 1.0 / state.limit
    state = replace(state, limit=min(config.max_limit, state.limit + step))
    if latency is None:
        return state
    if state.mean is None:
        return replace(state, mean=latency, samples=1)
    error = latency - state.mean
    return replace(
        state,
        mean=state.mean + config.alpha * error,
        deviation=state.deviation + config.alpha * (abs(error) - state.deviation),
        samples=state.samples + 1,
    )
