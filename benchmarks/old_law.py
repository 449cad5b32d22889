"""The controller's budget law as it was before issue 23, kept here for comparison only.

Copied from ``services/trackrelay/control/controller.py`` at commit 7e514d6
(``assess`` and ``_budget``, with the defaults of ``Spec``): the budget is
multiplied by ``increase`` on a healthy tick with backlog while the forwarders
deliver at least ``in_use`` of it, and by ``decrease`` on every unhealthy tick,
within ``[budget_min, budget_max]``. Health is judged on each forwarder's recent
window (5 s) of pushes: p99 within ``p99_target``, failures plus 429s at most
``max_error_share`` of pushes, no breaker open or probing.

``benchmarks/control.py`` runs it as its own control loop (observe, decide, set
the budget key, once a second) against a stack started with ``up --no-control``.
Budget only: the replicas stay as started. Nothing in trackrelay imports this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, slots=True)
class OldSpec:
    budget_min: float = 20.0
    budget_max: float = 5000.0
    budget_initial: float = 1000.0
    increase: float = 1.5
    decrease: float = 0.5
    in_use: float = 0.5
    p99_target: float = 0.5
    max_error_share: float = 0.05
    interval: float = 1.0
    """Seconds between ticks (``up``'s default control interval then)."""


@dataclass(frozen=True, slots=True)
class View:
    """One forwarder's recent window, as the old law read it."""

    pushes: int = 0
    latency_p99: float | None = None
    errors: int = 0
    throttled: int = 0
    breaker: str = "closed"
    events_per_second: float = 0.0


@dataclass(frozen=True, slots=True)
class Seen:
    """What one tick of the old law observed."""

    backlog: int
    forwarders: tuple[View, ...] = ()
    probe_ok: bool | None = None


@dataclass(frozen=True, slots=True)
class Health:
    healthy: bool | None
    why: str


def seen(observation: Any) -> Seen:
    """The old law's input from ``trackrelay.loop.observe``'s observation (read by name, so a
    new observation that keeps these fields still feeds it)."""
    views = tuple(
        View(
            pushes=int(f.pushes),
            latency_p99=f.latency_p99,
            errors=int(f.errors),
            throttled=int(f.throttled),
            breaker=str(f.breaker),
            events_per_second=float(f.events_per_second),
        )
        for f in observation.forwarders
    )
    return Seen(int(observation.lag) + int(observation.pending), views, observation.probe_ok)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def assess(spec: OldSpec, obs: Seen) -> Health:
    if obs.probe_ok is False:
        return Health(False, "analytics health probe failing")
    pushes = sum(f.pushes for f in obs.forwarders)
    bad = sum(f.errors + f.throttled for f in obs.forwarders)
    throttled = sum(f.throttled for f in obs.forwarders)
    share = bad / pushes if pushes else 0.0
    p99s = [f.latency_p99 for f in obs.forwarders if f.latency_p99 is not None]
    p99 = max(p99s) if p99s else None
    tripped = sorted({f.breaker for f in obs.forwarders if f.breaker != "closed"})
    if tripped:
        n = sum(f.breaker != "closed" for f in obs.forwarders)
        return Health(False, f"breaker {'/'.join(tripped)} on {n} forwarder(s)")
    if pushes and share > spec.max_error_share:
        kind = "429s" if throttled * 2 >= bad else "errors"
        return Health(False, f"analytics {kind} {share:.0%} of pushes > {spec.max_error_share:.0%}")
    if p99 is not None and p99 > spec.p99_target:
        return Health(False, f"analytics p99 {_ms(p99)} > {_ms(spec.p99_target)}")
    if not pushes:
        if obs.probe_ok:
            return Health(True, "health probe answers")
        return Health(None, "no pushes to judge by")
    return Health(True, f"analytics p99 {_ms(p99 or 0.0)}, errors {share:.0%}")


def budget(spec: OldSpec, old: float, obs: Seen) -> tuple[float, str | None]:
    """The next budget, and why it changed (None: unchanged)."""
    health = assess(spec, obs)
    delivered = sum(f.events_per_second for f in obs.forwarders)
    bound = delivered >= spec.in_use * old
    if health.healthy is False:
        new = max(spec.budget_min, min(spec.budget_max, old * spec.decrease))
    elif health.healthy and obs.backlog > 0 and bound:
        new = min(spec.budget_max, max(spec.budget_min, old * spec.increase))
    else:
        new = min(spec.budget_max, max(spec.budget_min, old))
    if new == old:
        return old, None
    why = (
        health.why
        if health.healthy is False
        else f"healthy, backlog {obs.backlog}, {delivered:.0f} ev/s delivered"
    )
    return new, f"budget {old:.0f} -> {new:.0f} ev/s: {why}"
