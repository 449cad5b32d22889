"""The controller: rate budget, forwarder replicas and shedding from what is observed (pure).

``decide(spec, observation, state, now) -> (decision, state)`` over plain data.
Local mode (``trackrelay up``) and the operator differ only in how they
observe and how they act on the decision; this module is the one place that
decides.

- **Budget** (events/s shared by every forwarder): ``control/budget.py``'s law on
  the tick's own pushes (``control/tick.py``): cut to ``decrease`` of the delivered
  rate once per congestion episode (429/503, timeouts, latency rising with our load,
  analytics' metrics out of range), not cut for a latency our rate does not drive,
  back at the last good rate at once, then ``increase`` a tick while used; held while
  analytics is down (the breakers pace it) and while its metrics are unknown.
- **Replicas**: enough to carry the delivered rate plus the backlog within
  ``drain_seconds`` at what one replica can deliver (its window over its push
  latency, Little's law), with the
  Kubernetes HPA's stabilisation (a scale-up must be wanted for the whole
  ``scale_up_window``, a scale-down for the whole ``scale_down_window``), never
  up while analytics is unhealthy, and never more than the budget can use:
  ``ceil(budget / per_replica)``. A lag-only autoscaler scales a sick analytics'
  backlog up; this one lowers the budget and with it the replicas.
- **Shedding**: the storage quota's automatic mode (``control.shedding``)
  from queue memory over quota, with its hysteresis; or the fixed policy configured.
- **Fail static**: with no observation, or one older than ``stale_after``, the
  last decision holds, and the decision says why. Nothing scales to zero and
  the budget never jumps on missing data.

Every change carries a ``Reason``: its kind (what changed; Events and views choose by it)
and a short text ("budget 800 -> 400 ev/s: analytics p99 2.3 s > 500 ms").
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from trackrelay.control import budget as budget_law
from trackrelay.control.analytics_health import Verdict
from trackrelay.control.reasons import Health as Health
from trackrelay.control.reasons import Reason as Reason
from trackrelay.control.reasons import ReasonKind as ReasonKind
from trackrelay.control.shedding import Policy, Shedding, Thresholds, choose, pressure
from trackrelay.control.tick import Sample, Tick, fleet_tick
from trackrelay.events import PushTotals

_LEARN = 0.3
"""Weight of a new per-replica rate measurement (exponential moving average)."""
_DEADBAND = 0.1
"""A per-replica estimate moves only when the new average differs by more than this share."""


@dataclass(frozen=True, slots=True)
class Bound:
    """The values one ``Spec`` field accepts: an interval, open or closed at each end."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def admits(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        return not (
            self.high is not None and (value >= self.high if self.high_open else value > self.high)
        )

    def describe(self) -> str:
        if self.high is None:
            return f"must be {'>' if self.low_open else '>='} {self.low:g}"
        if self.low is None:
            return f"must be {'<' if self.high_open else '<='} {self.high:g}"
        left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
        return f"must be in {left}{self.low:g}, {self.high:g}{right}"


_POSITIVE = Bound(0, low_open=True)
BUDGET_BOUND = Bound(1)
"""A rate budget, events/s: at least one event per controller tick. Below it a push of
one event reserves more than a tick of the shared clock, and delivery stalls."""


@dataclass(frozen=True, slots=True)
class Spec:
    """What the user asks of the controller (the AnalyticsPipeline spec, or ``up``'s flags).

    The one home of the controller's defaults (these field defaults) and bounds
    (``BOUNDS`` and ``problems``): settings, the operator's parser, the CRD and the
    chart's values take theirs from here, or a test holds them to it.
    """

    budget_min: float = 20.0
    budget_max: float = 5000.0
    budget_initial: float = 1000.0
    increase: float = 1.5
    """Factor the budget grows by on a healthy tick with backlog, above the last good rate
    (below it, it returns there at once)."""
    decrease: float = 0.5
    """On congestion, the budget is cut to this share of the rate analytics delivered
    (once per congestion episode)."""
    in_use: float = 0.5
    """The budget grows only while the forwarders deliver at least this share of it."""
    p99_target: float = 0.5
    """Seconds: a tick's push p99 at or below this is never congestion; above it, pushes
    queued at analytics count as congestion (latency alone does not)."""
    max_error_share: float = 0.05
    """Share of pushes answered 429/503 or timed out (congestion), or failed otherwise
    (analytics failing), beyond which the controller acts."""
    replicas_min: int = 1
    replicas_max: int = 4
    scale_up_window: float = 4.0
    """Seconds a scale-up must be wanted before it happens."""
    scale_down_window: float = 30.0
    """Seconds a scale-down must be wanted before it happens."""
    drain_seconds: float = 30.0
    """Backlog should be delivered within this many seconds (when the budget allows)."""
    replica_rate: float = 200.0
    """Events/s one forwarder is assumed to deliver until it has been measured."""
    stale_after: float = 10.0
    """Seconds after which an observation is too old to act on."""
    shedding: str = "auto"
    sample_p: float = 0.1
    thresholds: Thresholds = field(default_factory=Thresholds)

    def problems(self, names: Mapping[str, str] | None = None) -> list[str]:
        """What is wrong with this spec (empty when valid), each field called by its name in
        ``names`` (the CRD's path, a setting's name) or else in ``PROBLEM_NAMES``."""
        names = PROBLEM_NAMES if names is None else names
        out = []
        if not 0 < self.budget_min <= self.budget_max:
            out.append("budget: need 0 < min <= max")
        if not self.budget_min <= self.budget_initial <= self.budget_max:
            out.append("budget.initial: must lie within [min, max]")
        if not 0 < self.replicas_min <= self.replicas_max:
            out.append("replicas: need 0 < min <= max")
        for name, bound in BOUNDS.items():
            if not bound.admits(getattr(self, name)):
                out.append(f"{names.get(name, name)}: {bound.describe()}")
        return out


BOUNDS: dict[str, Bound] = {
    "budget_min": BUDGET_BOUND,
    "budget_max": BUDGET_BOUND,
    "budget_initial": BUDGET_BOUND,
    "increase": Bound(1, 10, low_open=True),
    "decrease": Bound(0, 1, low_open=True, high_open=True),
    "in_use": Bound(0, 1, low_open=True),
    "p99_target": _POSITIVE,
    "max_error_share": Bound(0, 1),
    "replicas_min": Bound(1, 1000),
    "replicas_max": Bound(1, 1000),
    "scale_up_window": Bound(0, 3600),
    "scale_down_window": Bound(0, 3600),
    "drain_seconds": _POSITIVE,
    "replica_rate": _POSITIVE,
    "stale_after": _POSITIVE,
    "sample_p": Bound(0, 1, low_open=True),
}
"""Each numeric field's admitted values (the CRD's schema states the same, by test)."""

PROBLEM_NAMES = {
    "increase": "budget.increase",
    "decrease": "budget.decrease",
    "in_use": "budget.in_use",
    "replicas_min": "replicas.min",
    "replicas_max": "replicas.max",
}
"""How ``problems`` names a field, where the spec's path differs from the field's name."""


@dataclass(frozen=True, slots=True)
class ForwarderView:
    """One forwarder's published statistics over its recent window."""

    name: str
    pushes: int = 0
    latency_p99: float | None = None
    errors: int = 0
    """Pushes that failed: 5xx, timeouts, connection errors."""
    throttled: int = 0
    """Pushes answered 429."""
    breaker: str = "closed"
    events_per_second: float = 0.0
    limit: float = 0.0
    """Events the forwarder may have in flight (its adaptive limit); 0: unknown."""
    latency_p50: float | None = None
    at: float | None = None
    """When the forwarder took these figures (None: the observation's time)."""
    totals: PushTotals | None = None
    """Its counters since it started: what each tick is judged by (None: a forwarder
    of 0.1.0, judged by its recent span instead)."""
    span: float = 5.0
    """Seconds the recent figures above cover."""


@dataclass(frozen=True, slots=True)
class Observation:
    at: float
    lag: int
    """Stream entries not yet delivered to the consumer group."""
    pending: int
    """Entries delivered to a forwarder and not yet acknowledged."""
    forwarders: tuple[ForwarderView, ...] = ()
    queue_bytes: int | None = None
    """Queue memory as admission counts it (``quota.pressure_usage``)."""
    queue_quota: int | None = None
    outbox_rows: int | None = None
    """Rows waiting in the outbox, as the relays last counted them (None: not known)."""
    outbox_quota: int | None = None
    probe_ok: bool | None = None
    """The analytics health probe's answer (None: no probe configured)."""
    analytics: Verdict | None = None
    """What analytics' own metrics say (None: no metrics source configured)."""

    @property
    def backlog(self) -> int:
        return self.lag + self.pending


@dataclass(frozen=True, slots=True)
class State:
    budget: float
    replicas: int
    shedding: Shedding = field(default_factory=Shedding)
    per_replica: float = 200.0
    history: tuple[tuple[float, int], ...] = ()
    """Replica recommendations (time, count) within the longer stabilisation window."""
    memory: budget_law.Memory = field(default_factory=budget_law.Memory)
    seen: tuple[tuple[str, float, PushTotals], ...] = ()
    """Each forwarder's counters at the last tick (name, snapshot time, counters)."""
    backlog_at: tuple[float, int] | None = None
    """The last observation's time and backlog (how fast the backlog grows)."""
    arrivals: float | None = None
    """Events/s arriving, smoothed: delivered plus the backlog's growth."""


@dataclass(frozen=True, slots=True)
class Decision:
    budget: float
    replicas: int
    shedding: Shedding
    health: Health
    backlog: int | None
    per_replica: float
    usable_replicas: int
    """The most replicas the budget can use."""
    held: bool = False
    """Fail static: the observation was missing or stale, the last decision holds."""
    reasons: tuple[Reason, ...] = ()
    last_good: float | None = None
    """Events/s analytics last took without congestion (the budget's memory)."""
    delivered: float | None = None
    """Events/s analytics accepted over this tick (None: no fresh pushes)."""


def initial_state(spec: Spec, replicas: int | None = None, budget: float | None = None) -> State:
    """Where the controller starts: what is running (replicas, budget) if known, within bounds."""
    return within(
        spec,
        State(
            budget=spec.budget_initial if budget is None else budget,
            replicas=spec.replicas_min if replicas is None else replicas,
            per_replica=spec.replica_rate,
        ),
    )


def within(spec: Spec, state: State) -> State:
    """``state`` with its budget and replicas brought within ``spec``'s bounds (a new spec)."""
    return replace(
        state,
        budget=min(spec.budget_max, max(spec.budget_min, state.budget)),
        replicas=min(spec.replicas_max, max(spec.replicas_min, state.replicas)),
    )


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def outage(obs: Observation) -> str | None:
    """Why analytics is failing rather than congested (breakers, probe), or None."""
    if obs.probe_ok is False:
        return "analytics health probe failing"
    tripped = sorted({f.breaker for f in obs.forwarders if f.breaker != "closed"})
    if tripped:
        n = sum(f.breaker != "closed" for f in obs.forwarders)
        return f"breaker {'/'.join(tripped)} on {n} forwarder(s)"
    return None


def _sample(view: ForwarderView, at: float) -> Sample:
    """What a forwarder without counters stands for: its recent span, ending at ``at``."""
    return Sample(
        start=at - view.span,
        end=at,
        pushes=view.pushes,
        accepted_events=round(view.events_per_second * view.span),
        congested=view.throttled,
        failed=view.errors,
        latency_p99=view.latency_p99,
    )


def tick_of(obs: Observation, state: State) -> tuple[Tick | None, State]:
    """The fleet's pushes since the last tick, and the state remembering these counters."""
    snapshots = [
        (
            v.name,
            v.at if v.at is not None else obs.at,
            v.totals,
            None if v.totals is not None else _sample(v, v.at if v.at is not None else obs.at),
        )
        for v in obs.forwarders
    ]
    seen = {name: (at, totals) for name, at, totals in state.seen}
    tick, remembered = fleet_tick(snapshots, seen)
    kept = tuple(sorted((name, at, totals) for name, (at, totals) in remembered.items()))
    return tick, replace(state, seen=kept)


def _failing(spec: Spec, tick: Tick | None) -> str | None:
    """Failures that are not overload (5xx, refused connections) beyond the error share."""
    if tick is None or not tick.pushes or tick.failed_share <= spec.max_error_share:
        return None
    return f"analytics errors on {tick.failed_share:.0%} of pushes > {spec.max_error_share:.0%}"


def usable_replicas(spec: Spec, budget: float, per_replica: float) -> int:
    """The most replicas a budget can keep busy (at least ``replicas_min``)."""
    fit = math.ceil(budget / per_replica - 1e-9) if per_replica > 0 else spec.replicas_max
    return min(spec.replicas_max, max(spec.replicas_min, fit))


def _arrivals(state: State, obs: Observation, delivered: float) -> float:
    """Events/s to carry: what was delivered plus how fast the backlog grew (a shrinking
    backlog counts as none: the drain term covers it), smoothed over ticks (half the
    weight on the newest). Delivered alone would under-count what a slow analytics
    leaves waiting."""
    growth = 0.0
    if state.backlog_at is not None and obs.at > state.backlog_at[0]:
        at, backlog = state.backlog_at
        growth = (obs.backlog - backlog) / (obs.at - at)
    now = delivered + max(0.0, growth)
    return now if state.arrivals is None else 0.5 * state.arrivals + 0.5 * now


def _per_replica(spec: Spec, state: State, obs: Observation, health: Health) -> float:
    """What one replica can deliver: its limit over its push latency (Little's law).

    A forwarder keeps at most ``limit`` events in flight and a push takes about
    its median latency, so a replica can deliver ``limit / p50`` events/s,
    whatever the budget or the backlog let it deliver now (and never less than
    it was seen to deliver). The limit is adaptive, so it
    already shrinks when analytics pushes back. Learned on healthy ticks only,
    smoothed, and moved only past a dead band.
    """
    seen = [f for f in obs.forwarders if f.limit > 0 and f.latency_p50]
    if not seen or not health.healthy:
        return state.per_replica
    capacity = [max(f.limit / (f.latency_p50 or 1.0), f.events_per_second) for f in seen]
    measured = sum(capacity) / len(capacity)
    learned = (1 - _LEARN) * state.per_replica + _LEARN * measured
    if abs(learned - state.per_replica) < _DEADBAND * state.per_replica:
        # Noise: keep the estimate, so the replicas the budget can use do not
        # flicker across a boundary (a property test found 5 <-> 6 flapping).
        return state.per_replica
    return max(1.0, learned)


def _recent(
    history: tuple[tuple[float, int], ...], now: float, window: float
) -> tuple[tuple[float, int], ...]:
    """The recommendations made within ``window`` before ``now``, and the one in force
    when the window opened (the newest made at or before its start), oldest first: the
    window is covered when the first of them is that one."""
    inside = tuple((t, n) for t, n in history if now - t < window)
    before = [(t, n) for t, n in history if now - t >= window]
    return (*before[-1:], *inside)


def _over(history: tuple[tuple[float, int], ...], now: float, window: float, old: int) -> list[int]:
    """The counts wanted over ``window``; ``old`` stands in for the start not yet covered."""
    recent = _recent(history, now, window)
    covered = bool(recent) and now - recent[0][0] >= window
    return [n for _, n in recent] + ([] if covered else [old])


def _replicas(
    spec: Spec,
    state: State,
    obs: Observation,
    health: Health,
    budget: float,
    per_replica: float,
    now: float,
    arrivals: float,
) -> tuple[int, tuple[tuple[float, int], ...], Reason | None]:
    demand = arrivals + obs.backlog / spec.drain_seconds
    wanted = min(spec.replicas_max, max(spec.replicas_min, math.ceil(demand / per_replica - 1e-9)))
    keep = max(spec.scale_up_window, spec.scale_down_window)
    history = _recent((*state.history, (now, wanted)), now, keep)
    old = state.replicas
    target = old
    # A change must be wanted over its whole window: the recommendation in force when
    # the window opened counts, and until one reaches back that far, the current
    # count stands in for it. (Ticks are never exactly an interval apart: keeping only
    # the ones inside the window would leave its start uncovered, and no change would
    # ever pass a window as long as the one the history is kept for.)
    up = _over(history, now, spec.scale_up_window, old)
    down = _over(history, now, spec.scale_down_window, old)
    why = (
        f"backlog {obs.backlog} and {arrivals:.0f} ev/s arriving"
        f" at {per_replica:.0f} ev/s per replica"
    )
    if min(up) > old:
        if health.healthy:
            target = min(up)
        else:
            why = ""
    elif max(down) < old:
        target = max(down)
    usable = usable_replicas(spec, budget, per_replica)
    if target > usable:
        target = usable
        why = f"budget {budget:.0f} ev/s can use {usable} at {per_replica:.0f} ev/s per replica"
    target = min(spec.replicas_max, max(spec.replicas_min, target))
    if target == old:
        return old, history, None
    kind = ReasonKind.SCALED_UP if target > old else ReasonKind.SCALED_DOWN
    return target, history, Reason(kind, f"replicas {old} -> {target}: {why}")


def _shedding(spec: Spec, state: State, obs: Observation) -> tuple[Shedding, Reason | None]:
    if obs.queue_bytes is None or not obs.queue_quota:
        new = choose(spec.shedding, spec.sample_p, 0.0, state.shedding, spec.thresholds)
        share = 0.0
    else:
        share = pressure(obs.queue_bytes, obs.queue_quota)
        new = choose(spec.shedding, spec.sample_p, share, state.shedding, spec.thresholds)
    if new == state.shedding:
        return new, None
    why = f"shedding {describe(state.shedding)} -> {describe(new)}: queue at {share:.0%} of quota"
    return new, Reason(ReasonKind.SHEDDING_CHANGED, why)


def describe(s: Shedding) -> str:
    return f"sample p={s.p:.2f}" if s.policy is Policy.SAMPLE else s.policy.value


def hold(spec: Spec, state: State, why: str) -> Decision:
    """The last decision, unchanged: what fail static means."""
    return Decision(
        budget=state.budget,
        replicas=state.replicas,
        shedding=state.shedding,
        health=Health(None, why),
        backlog=None,
        per_replica=state.per_replica,
        usable_replicas=usable_replicas(spec, state.budget, state.per_replica),
        held=True,
        reasons=(Reason(ReasonKind.HOLDING, f"holding the last decision: {why}"),),
        last_good=state.memory.last_good,
    )


def decide(
    spec: Spec, obs: Observation | None, state: State, now: float, missing: str = "no observation"
) -> tuple[Decision, State]:
    """One tick: the decision for ``obs`` and the state to pass to the next tick.

    ``missing`` says why ``obs`` is None (Redis unreachable, ...), for the reason.
    """
    if obs is None:
        return hold(spec, state, missing), state
    if now - obs.at > spec.stale_after:
        return hold(spec, state, f"observation {now - obs.at:.0f} s old"), state
    tick, state = tick_of(obs, state)
    budget, memory, budget_why, health = budget_law.step(
        spec,
        state.budget,
        state.memory,
        tick,
        obs.backlog,
        now,
        down=outage(obs) or _failing(spec, tick),
        external=obs.analytics,
        staleness=obs.analytics.staleness if obs.analytics is not None else None,
    )
    delivered = tick.delivered if tick is not None else 0.0
    arrivals = _arrivals(state, obs, delivered)
    per_replica = _per_replica(spec, state, obs, health)
    replicas, history, replicas_why = _replicas(
        spec, state, obs, health, budget, per_replica, now, arrivals
    )
    shedding, shedding_why = _shedding(spec, state, obs)
    reasons = tuple(r for r in (budget_why, replicas_why, shedding_why) if r is not None)
    decision = Decision(
        budget=budget,
        replicas=replicas,
        shedding=shedding,
        health=health,
        backlog=obs.backlog,
        per_replica=per_replica,
        usable_replicas=usable_replicas(spec, budget, per_replica),
        reasons=reasons,
        last_good=memory.last_good,
        delivered=None if tick is None else tick.delivered,
    )
    new_state = replace(
        state,
        budget=budget,
        replicas=replicas,
        shedding=shedding,
        per_replica=per_replica,
        history=history,
        memory=memory,
        backlog_at=(obs.at, obs.backlog),
        arrivals=arrivals,
    )
    return decision, new_state
