"""Shedding analytics data at our ingress under a storage quota (pure decisions).

The decisions only, no Redis: ``relay/ingress.py`` and ``relay/guard.py`` apply them
(with the scripts of ``queue/quota.py``). Analytics computes popularity as the sum of
``qty * weight`` per SKU, and every policy keeps that sum unbiased (sampling) or exact
(aggregation):

- ``sample``: keep an event with probability ``p``, decided by a hash of its
  event id (a retry of the same event makes the same decision), and give it
  ``weight / p``;
- ``aggregate``: fold events into per-SKU counters per time window, flushed as
  one event per SKU and window with a stable id, so a re-flush is recognisable;
- ``evict`` and ``drop_new``: bounded loss, counted;
- ``automatic``: the policy and its ``p`` from pressure (queue memory / quota),
  with hysteresis so it does not flap.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from enum import StrEnum

from trackrelay.events import Event


class Policy(StrEnum):
    NONE = "none"
    SAMPLE = "sample"
    AGGREGATE = "aggregate"
    EVICT = "evict"
    DROP_NEW = "drop_new"


AUTO = "auto"
"""The shedding mode that picks the policy from pressure (``choose``)."""

MODES: tuple[str, ...] = (AUTO, *(p.value for p in Policy))
"""Every shedding mode a user may configure: ``auto`` or a fixed policy. Settings, the
CLI, the operator and (by test) the CRD and the chart's schema take theirs from here."""

_ORDER = (Policy.NONE, Policy.SAMPLE, Policy.AGGREGATE, Policy.EVICT)
"""The automatic mode's levels, mildest first."""

_UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "mb": 1000**2,
    "gb": 1000**3,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
}


def parse_size(text: str) -> int:
    """Bytes from ``64MiB``, ``512KiB``, ``1.5GB`` or plain ``1048576``; ``ValueError`` if bad."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([A-Za-z]*)\s*", text)
    if not m or m.group(2).lower() not in _UNITS:
        raise ValueError(
            f"size {text!r}: expected bytes or a number with KiB, MiB, GiB, KB, MB or GB"
        )
    value = float(m.group(1)) * _UNITS[m.group(2).lower()]
    if value < 1:
        raise ValueError(f"size {text!r}: must be at least one byte")
    return int(value)


def hash_fraction(event_id: str) -> float:
    """A uniform number in [0, 1) fixed by the event id (BLAKE2b, first 8 bytes)."""
    digest = hashlib.blake2b(event_id.encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def sampled_weight(event_id: str, weight: float, p: float) -> float | None:
    """The kept event's new weight (``weight / p``), or None when the event is shed."""
    if not 0 < p <= 1:
        raise ValueError("p must be in (0, 1]")
    if p == 1:
        return weight
    return weight / p if hash_fraction(event_id) < p else None


def resampled_weight(event_id: str, weight: float, p: float) -> float | None:
    """Sample an event that may have been sampled before: keep with overall probability ``p``.

    An event of weight ``w >= 1`` was kept so far with probability ``1 / w`` (its
    hash fell below that). Sampling it again at a smaller ``p`` keeps it when its
    hash falls below ``p``, a subset of the earlier decision, with weight ``1 / p``;
    at ``p >= 1 / w`` nothing changes. The overall decision and weight are those of
    one sampling at the smaller probability, so sums stay unbiased however often an
    event is thinned (in the outbox, then at the stream).
    """
    if not 0 < p <= 1:
        raise ValueError("p must be in (0, 1]")
    kept_so_far = min(1.0, 1.0 / weight) if weight > 0 else 1.0
    if p >= kept_so_far:
        return weight
    return weight * kept_so_far / p if hash_fraction(event_id) < p else None


def window_start(occurred_ms: int, window_ms: int) -> int:
    """The start of the aggregation window an event falls in (epoch milliseconds)."""
    if window_ms <= 0:
        raise ValueError("window_ms must be > 0")
    return occurred_ms - occurred_ms % window_ms


def aggregate_id(sku: str, window: int | str) -> str:
    """The stable event id of one SKU's aggregate for one window (re-flushes repeat it)."""
    return f"agg:{window}:{sku}"


def aggregate_qty(total: float) -> tuple[int, float]:
    """``(qty, weight)`` of an aggregated event whose ``qty * weight`` is ``total``.

    The contract's ``qty`` is an integer: an integral total (no sampled event in
    the window) gives weight 1; otherwise the rounded qty with the weight that
    makes the product exact.
    """
    if total <= 0:
        raise ValueError("an aggregate's total must be > 0")
    qty = max(1, round(total))
    return qty, (1.0 if qty == total else total / qty)


@dataclass(frozen=True, slots=True)
class Thresholds:
    """Pressure (used / quota) at which each level starts, and the hysteresis band.

    By default sampling has no band of its own (``sample_at == aggregate_at``): past
    40 % of the quota the automatic mode aggregates, which keeps popularity exact,
    where sampling only keeps it unbiased. ``benchmarks/shedding.py`` measures both
    ladders: thinning at 10x load sheds most lines within seconds of starting and
    costs the top-100 list its accuracy. Set ``sample_at`` below ``aggregate_at``
    for a sampling band (per-event data kept for longer, at that price).
    """

    sample_at: float = 0.4
    aggregate_at: float = 0.4
    evict_at: float = 0.9
    hysteresis: float = 0.2
    min_p: float = 0.25

    def __post_init__(self) -> None:
        if not 0 < self.sample_at <= self.aggregate_at < self.evict_at <= 1:
            raise ValueError("need 0 < sample_at <= aggregate_at < evict_at <= 1")
        if not 0 <= self.hysteresis < self.sample_at or not 0 < self.min_p <= 1:
            raise ValueError("need 0 <= hysteresis < sample_at and 0 < min_p <= 1")

    def starts(self, policy: Policy) -> float:
        return {
            Policy.NONE: 0.0,
            Policy.SAMPLE: self.sample_at,
            Policy.AGGREGATE: self.aggregate_at,
            Policy.EVICT: self.evict_at,
        }[policy]


@dataclass(frozen=True, slots=True)
class Shedding:
    policy: Policy = Policy.NONE
    p: float = 1.0
    """Keep probability for ``sample`` (1 otherwise)."""


def live_form(s: Shedding) -> dict[str, object]:
    """A shedding decision as the controller writes it to live configuration (``live_shedding``
    reads it back)."""
    return {"policy": s.policy.value, "p": s.p}


def live_shedding(data: object) -> Shedding:
    """A controller-decided shedding from its JSON form; ``ValueError`` saying what is wrong."""
    if not isinstance(data, dict):
        raise ValueError("live shedding must be a JSON object")
    try:
        policy = Policy(str(data.get("policy")))
    except ValueError:
        raise ValueError(
            f"live shedding policy {data.get('policy')!r}: not one of "
            + ", ".join(p.value for p in Policy)
        ) from None
    p = data.get("p", 1.0)
    if isinstance(p, bool) or not isinstance(p, int | float) or not 0 < p <= 1:
        raise ValueError(f"live shedding p {p!r}: must be a number in (0, 1]")
    return Shedding(policy, float(p) if policy is Policy.SAMPLE else 1.0)


def _level(pressure: float, th: Thresholds) -> int:
    return max(i for i, policy in enumerate(_ORDER) if pressure >= th.starts(policy))


def automatic(pressure: float, previous: Shedding, th: Thresholds | None = None) -> Shedding:
    """The shedding for ``pressure``: up a level at once, down only ``hysteresis`` below.

    ``sample``'s p falls linearly from 1 at ``sample_at`` to ``min_p`` at
    ``aggregate_at``, and never rises again while pressure stays inside the band.
    """
    th = th or Thresholds()
    pressure = max(0.0, pressure)
    span = th.aggregate_at - th.sample_at
    was = _ORDER.index(previous.policy) if previous.policy in _ORDER else 0
    level = _level(pressure, th)
    if level < was and pressure >= th.starts(_ORDER[was]) - th.hysteresis:
        level = was  # inside the hysteresis band: stay
    policy = _ORDER[level]
    if policy is not Policy.SAMPLE or span <= 0:
        return Shedding(policy)
    share = min(1.0, max(0.0, (pressure - th.sample_at) / span))
    p = max(th.min_p, 1.0 - share * (1.0 - th.min_p))
    if previous.policy is Policy.SAMPLE and pressure >= th.sample_at - th.hysteresis:
        # Falling pressure raises p only once it has left the band around the old p.
        relief = th.hysteresis / span * (1.0 - th.min_p)
        if p > previous.p and p - previous.p < relief:
            p = previous.p
    return Shedding(policy, p)


def aggregate_event(
    sku: str,
    window: int | str,
    total: float,
    lines: int,
    stamp: str,
    error: float = 0.0,
    floor: float = 0.0,
) -> Event:
    """The one event a window sends for a SKU: ``qty * weight`` is the window's total;
    ``error``: how far that total may overstate the truth (a sketch counter's bound);
    ``floor``: the most any SKU the window's sketch does not list had in the window."""
    qty, weight = aggregate_qty(total)
    bound = min(error, qty * weight)  # the same total, as the event states it
    return Event(
        aggregate_id(sku, window), f"agg:{window}", sku, qty, weight, stamp, lines, bound, floor
    )


@dataclass(frozen=True, slots=True)
class Line:
    """What shedding needs of one analytics event."""

    event_id: str
    sku: str
    qty: int
    weight: float
    lines: int = 1


@dataclass(slots=True)
class Plan:
    """What to do with a batch of events, by index into the batch."""

    send: dict[int, float | None]
    """Index -> new weight (None: unchanged) for events that go to the queue as events."""
    fold: list[int]
    """Events folded into per-SKU aggregates."""
    shed: list[int]
    """Events thinned away by sampling."""


def plan(shedding: Shedding, batch: list[Line]) -> Plan:
    """Per event: send (maybe reweighted), fold into an aggregate, or shed (sampled out).

    ``evict`` and ``drop_new`` send every event: they act at the quota's cap, where
    the queue makes room (evict) or refuses what does not fit (drop_new).
    Aggregates (``lines > 1``) are never sampled: they stand for exact totals.
    """
    out = Plan(send={}, fold=[], shed=[])
    for i, line in enumerate(batch):
        if shedding.policy is Policy.AGGREGATE:
            out.fold.append(i)
        elif shedding.policy is Policy.SAMPLE and line.lines == 1:
            weight = resampled_weight(line.event_id, line.weight, shedding.p)
            if weight is None:
                out.shed.append(i)
            else:
                out.send[i] = None if weight == line.weight else weight
        else:
            out.send[i] = None
    return out


def choose(
    mode: str, sample_p: float, pressure: float, previous: Shedding, th: Thresholds
) -> Shedding:
    """The shedding in force: the automatic mode's from pressure, or the configured policy."""
    if mode == "auto":
        return automatic(pressure, previous, th)
    policy = Policy(mode)
    return Shedding(policy, sample_p if policy is Policy.SAMPLE else 1.0)


def admit_mode(policy: Policy) -> str:
    """What the stream does with an event that does not fit under the quota.

    ``evict`` makes room, ``drop_new`` refuses it; every other policy holds it
    back in the outbox until forwarders have made room.
    """
    return {Policy.EVICT: "evict", Policy.DROP_NEW: "drop"}.get(policy, "hold")


def fold_lines(batch: list[Line]) -> dict[str, tuple[float, int]]:
    """Per SKU: the sum of ``qty * weight`` and of ``lines`` (what an aggregate carries)."""
    out: dict[str, tuple[float, int]] = {}
    for line in batch:
        total, lines = out.get(line.sku, (0.0, 0))
        out[line.sku] = (total + line.qty * line.weight, lines + line.lines)
    return out


def pressure(used: float, quota: float) -> float:
    """Used / quota (0 with no quota)."""
    return max(0.0, used / quota) if quota > 0 else 0.0


def outbox_excess(rows: int, quota: int, th: Thresholds, arriving: int = 0) -> int:
    """Rows to remove from the outbox now, so it stays within its quota until the next check.

    The outbox is checked on an interval, so every policy trims to ``evict_at``
    of the quota once past it, and further when ``arriving`` (rows that came in
    during the last interval) would not fit twice in what is left: room for what
    arrives before the next check. Which rows go is the policy's: the newest for
    ``drop_new``, the oldest for every other (the quota is hard; thinning acts
    below it).
    """
    target = min(int(quota * th.evict_at), quota - 2 * max(0, arriving))
    return max(0, rows - max(0, target))


def fold(events: list[tuple[str, int, float, int]], window_ms: int) -> dict[tuple[str, int], float]:
    """Aggregate ``(sku, qty, weight, occurred_ms)`` events: ``qty * weight`` per SKU and window.

    Per-SKU totals over all windows equal those of the events themselves.
    """
    out: dict[tuple[str, int], float] = {}
    for sku, qty, weight, occurred_ms in events:
        key = (sku, window_start(occurred_ms, window_ms))
        out[key] = out.get(key, 0.0) + qty * weight
    return out
