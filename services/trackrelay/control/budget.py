"""The rate budget's law: follow what analytics takes, cut once per congestion (pure).

The budget is the fleet's shared ceiling in events/s; each forwarder's adaptive
window (``limiter``) does the per-push control under it. The law judges one
``Tick`` at a time, the pushes that ended since the last observation (never a
window that outlives the decision):

- **Congestion** means signals our load causes: 429/503 answers and timeouts on
  more than ``max_error_share`` of pushes; or latency rising with our
  load: more than that share of pushes slower than their forwarder's latency band
  for their size (analytics queues our work), with the tick's p99 above
  ``p99_target`` and its mean latency above the level analytics was found slow at
  whatever our rate (latency that rose while our delivered rate fell is analytics'
  own, and becomes that level), confirmed on a tick wholly after it was first seen
  (in the tick a slowdown begins, pushes sent before it still end, so our rate has
  not yet fallen as it will); or analytics' own metrics out of range (one cut for
  as long as they stay so: their queries average over a window that outlives any
  tick). On congestion the budget is cut to ``decrease`` times the rate analytics
  *delivered* in that tick (a budget nobody used says nothing), once per episode:
  no further cut until a tick wholly after the cut (its pushes all started after it,
  a push latency later) still shows congestion.
- **Not ours**: after a cut on latency alone, a tick wholly after it whose mean
  latency has not fallen (within ``FLAT``) shows latency our rate does not drive. The
  cut is undone, that latency becomes the level analytics is "slow at whatever our
  rate" (latency within ``1 + RISE`` of it is no congestion), and the reason says so.
- **Memory**: ``last_good``, the highest rate analytics took without congestion
  while there was backlog (at a congestion, what it took then, but no less than
  ``decrease`` of what was remembered). Below it the budget
  returns there in one tick (after an outage, after a cut), as CUBIC returns to
  W_max; above it, the budget probes, gently at first (a quarter of ``increase``'s
  growth, then half...; the whole of it from the ``PROBE_TICKS``-th tick in a row),
  and only while the forwarders use at least ``in_use`` of it (a budget nobody uses
  only stores up a burst, RFC 7661), so it stays within a small factor of what is
  delivered.
- **Analytics failing or down** (breakers open, probe failing, failures that are
  not overload): the breakers and the retry allowance pace the pushes; the budget
  holds, ready for the return. Breakers opened by 429/503 answers are overload: the
  budget is cut once for them, and the episode stays open while they hold the
  pushes back.
- **Unknown** analytics metrics hold the budget for the staleness window, then bring
  it down to the last good rate at most, with no growth: unknown is never healthy.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from trackrelay.control.analytics_health import Signal, Verdict
from trackrelay.control.reasons import Health, Reason, ReasonKind
from trackrelay.control.tick import Tick

if TYPE_CHECKING:
    from trackrelay.control.controller import Spec

FLAT = 0.9
"""After a cut on latency alone, a p99 still at least this share of the one that caused
it means the latency is not ours."""
PROBE_TICKS = 4
"""Growth ticks in a row above the last good rate before the budget grows by the whole
``increase`` (the first grows by a quarter of it, the second by half...)."""
FELL = 0.25
"""Latency that rose in a tick whose delivered rate fell by more than this share is not
ours (our load did not rise)."""
FADE = 0.8
"""Per tick, the share of the reference delivered rate that remains when less is delivered."""
RISE = 0.5
"""Latency up to ``(1 + RISE)`` times the level analytics is slow at whatever our rate
is not congestion."""


@dataclass(frozen=True, slots=True)
class Memory:
    """What the law remembers between ticks."""

    last_good: float | None = None
    """Events/s analytics last took without congestion (None: not seen yet)."""
    flat: float | None = None
    """The mean latency (seconds) analytics was found slow at whatever our rate."""
    cut_at: float | None = None
    """When the open episode's cut was made (None: no episode open)."""
    cut_from: float = 0.0
    """The budget before that cut."""
    cut_latency: float | None = None
    """The mean latency when a cut was made on latency alone, until a later tick checks
    that the latency was ours."""
    unknown_since: float | None = None
    """Since when analytics' metrics have been unknown."""
    probing: int = 0
    """Ticks in a row the budget has grown above the last good rate."""
    delivered: float | None = None
    """The recent peak (fading by ``FADE`` a tick) of events/s delivered in ticks with
    pushes and no latency trouble: what a slower tick's fall is measured from."""
    down_cut: bool = False
    """The cut for breakers opened by overload answers is made (until they close)."""
    metrics_episode: bool = False
    """Analytics' metrics are unhealthy and the cut for it is made."""
    rise_at: float | None = None
    """When latency first read as congestion (None: it does not now). It is a cut only
    once a tick wholly after that still shows it: in the tick a slowdown begins, pushes
    sent before it still end, and our rate has not yet fallen as it will."""


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def congestion(spec: Spec, memory: Memory, tick: Tick) -> tuple[str | None, bool]:
    """Why ``tick`` shows congestion (None: it does not), and whether by latency alone.

    Latency counts only when it rose while our rate held: latency that rose as our rate
    fell is analytics' own (``step`` then records it as the level it is slow at)."""
    if tick.pushes and tick.congested_share > spec.max_error_share:
        share = f"{tick.congested_share:.0%} of pushes > {spec.max_error_share:.0%}"
        return f"analytics overloaded (429/503, timeouts) on {share}", False
    p99, mean = tick.latency_p99, tick.latency_mean
    if p99 is None or mean is None or tick.delayed_share <= spec.max_error_share:
        return None, False
    if p99 <= spec.p99_target:
        return None, False
    if memory.flat is not None and mean <= memory.flat * (1 + RISE):
        return None, False  # the level analytics is slow at whatever our rate
    queued = f"{tick.delayed_share:.0%} of pushes queued at analytics"
    why = f"analytics p99 {ms(p99)} > {ms(spec.p99_target)} rising with our load ({queued})"
    return why, True


def step(
    spec: Spec,
    budget: float,
    memory: Memory,
    tick: Tick | None,
    backlog: int,
    now: float,
    down: str | None = None,
    external: Verdict | None = None,
    staleness: float | None = None,
) -> tuple[float, Memory, Reason | None, Health]:
    """One tick of the law: the new budget, memory, the reason for a change, and health.

    ``down``: why analytics is failing (breakers open, probe failing), if it is.
    ``external``: what analytics' own metrics say; ``staleness``: how long an unknown
    verdict holds the budget (default ``spec.stale_after``).
    """

    def clamp(x: float) -> float:
        return min(spec.budget_max, max(spec.budget_min, x))

    def change(new: float, why: str) -> Reason | None:
        if new == budget:
            return None
        kind = ReasonKind.BUDGET_RAISED if new > budget else ReasonKind.BUDGET_CUT
        return Reason(kind, f"budget {budget:.0f} -> {new:.0f} ev/s: {why}")

    p99 = tick.latency_p99 if tick is not None else None
    share = tick.congested_share + tick.failed_share if tick is not None else 0.0
    overloaded = (
        tick is not None and tick.pushes > 0 and (tick.congested_share > spec.max_error_share)
    )
    # Breakers opened by overload answers cut once: the episode stays open while they
    # hold the pushes back (what they let through says nothing about our rate).
    if down is not None and (not overloaded or memory.down_cut):
        return budget, replace(memory, cut_latency=None), None, Health(False, down, p99, share)
    memory = replace(memory, down_cut=down is not None)

    if external is not None and external.state is Signal.UNKNOWN:
        since = memory.unknown_since if memory.unknown_since is not None else now
        memory = replace(memory, unknown_since=since)
        window = spec.stale_after if staleness is None else staleness
        unknown = f"analytics metrics unknown ({external.why})"
        if now - since <= window or memory.last_good is None or budget <= memory.last_good:
            return budget, memory, None, Health(None, f"{unknown}: holding", p99, share)
        new = clamp(memory.last_good)
        held = f"{unknown} for {now - since:.0f} s: no more than the last good rate"
        return new, memory, change(new, held), Health(None, held, p99, share)
    memory = replace(memory, unknown_since=None)

    why: str | None = None
    latency_only = False
    if tick is not None:
        why, latency_only = congestion(spec, memory, tick)
    metrics_bad = external is not None and external.state is Signal.UNHEALTHY
    if external is not None and metrics_bad and why is None:
        # Analytics' metrics lag (their queries average over a window): one cut for the
        # whole time they stay unhealthy, then the budget holds until they recover.
        if memory.metrics_episode:
            holding = f"analytics metrics: {external.why} (cut once; holding until they recover)"
            return budget, memory, None, Health(False, holding, p99, share)
        why = f"analytics metrics: {external.why}"
    memory = replace(memory, metrics_episode=metrics_bad)
    if tick is None and why is None:
        return budget, memory, None, Health(None, "no pushes to judge by", p99, share)
    if tick is not None:
        before = memory.delivered
        if latency_only and before and tick.delivered < (1 - FELL) * before:
            # Slower while we sent less: not our load. Its level is now the reference.
            memory = replace(memory, flat=tick.latency_mean)
            why, latency_only = None, False
        if not latency_only:
            memory = replace(memory, rise_at=None)
        if not latency_only and (
            tick.delayed_share <= spec.max_error_share or memory.flat is not None
        ):
            # The reference is the recent peak of ticks without queueing at analytics (or
            # at the level it is slow at), fading by ``FADE`` a tick: a tick in which the
            # pushes of a slowdown are still in flight delivers little, and must not be
            # what the next tick's fall is measured from.
            ref = memory.delivered
            peak = tick.delivered if ref is None else max(tick.delivered, FADE * ref)
            memory = replace(memory, delivered=peak)

    # An episode: nothing judges the cut until a tick wholly after it.
    start = tick.start if tick is not None else (external.at if external is not None else now)
    settle = tick.settle if tick is not None else 0.0
    if latency_only and memory.cut_at is None:
        # Latency is confirmed on a tick wholly after it was first seen: by then a
        # slowdown of analytics' own has lowered what we deliver (and reads as such).
        rise_at = now if memory.rise_at is None else memory.rise_at
        memory = replace(memory, rise_at=rise_at)
        if start < rise_at + settle:
            waiting = f"{why} (confirming on a tick wholly after it)"
            return budget, memory, None, Health(False, waiting, p99, share)
    if memory.cut_at is not None and start < memory.cut_at + settle:
        waiting = f"{why or 'no congestion'} (waiting for a tick wholly after the cut)"
        return budget, memory, None, Health(why is None, waiting, p99, share)

    mean = tick.latency_mean if tick is not None else None
    if memory.cut_latency is not None:
        caused = memory.cut_latency
        memory = replace(memory, cut_latency=None)
        refused = why is not None and not latency_only
        # Judged by the mean latency, whatever the pushes' sizes: a cut makes pushes
        # smaller, and small pushes are not judged against the latency band.
        if not refused and mean is not None and mean >= FLAT * caused:
            restored = clamp(max(budget, memory.cut_from))
            memory = replace(memory, flat=mean, cut_at=None)
            text = f"analytics slow at {ms(mean)} whatever our rate: not cutting"
            return restored, memory, change(restored, text), Health(True, text, p99, share)

    delivered = tick.delivered if tick is not None else 0.0
    if why is not None:
        new = clamp(min(budget, spec.decrease * (delivered if delivered > 0 else budget)))
        last_good = memory.last_good
        if delivered > 0:
            # What analytics took while congested (below it when its latency was the sign),
            # but no less than ``decrease`` of the memory: a tick cut short by an outage
            # or a burst of 429s delivers little, and says little about analytics' pace.
            took = delivered * ((1 + spec.decrease) / 2 if latency_only else 1.0)
            last_good = max(took, spec.decrease * (last_good or 0.0))
        memory = replace(
            memory,
            last_good=last_good,
            cut_at=now,
            cut_from=budget,
            cut_latency=mean if latency_only else None,
            probing=0,
        )
        text = f"{why}; {delivered:.0f} ev/s delivered"
        return new, memory, change(new, text), Health(False, why, p99, share)

    assert tick is not None
    if memory.flat is not None and mean is not None and mean < memory.flat / (1 + RISE):
        memory = replace(memory, flat=None)  # analytics is fast again
    healthy = (
        f"analytics slow at {ms(mean or 0.0)} whatever our rate"
        if memory.flat is not None
        else f"analytics p99 {ms(p99 or 0.0)}, {share:.0%} of pushes overloaded or failed"
    )
    health = Health(True, healthy, p99, share)
    last_good = memory.last_good
    if backlog > 0 and delivered > 0:
        last_good = max(last_good or 0.0, delivered)
    memory = replace(memory, last_good=last_good, cut_at=None)
    if last_good is not None and budget < last_good:
        new = clamp(last_good)
        back = f"back to {last_good:.0f} ev/s, the rate analytics last took well"
        return new, replace(memory, probing=0), change(new, back), health
    if backlog <= 0 or delivered < spec.in_use * budget:
        return budget, replace(memory, probing=0), None, health
    # Convex probing above the last good rate, as CUBIC's: gently at first, then faster
    # the longer analytics keeps taking more.
    probing = memory.probing + 1
    factor = 1 + (spec.increase - 1) * min(1.0, probing / PROBE_TICKS)
    new = clamp(budget * factor)
    grow = f"healthy, backlog {backlog}, {delivered:.0f} ev/s delivered"
    return new, replace(memory, probing=probing), change(new, grow), health
