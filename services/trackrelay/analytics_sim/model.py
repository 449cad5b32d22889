"""Pure parts of the simulator: capacity model, faults, schedules, event validation.

The capacity model is a single FIFO server: a request of n events needs
``overhead + n / rate`` seconds of work and starts when the work before it is
done, so latency rises with load. Past ``queue_limit`` events of queued work it
answers 429 with a Retry-After. In collapse mode the effective rate falls as
the queue grows (goodput drops under overload, as real services do). Another
client may take part of the server (``other_client`` events/s): its work joins the
same queue as a steady flow, so it raises our latency and leaves us less of the rate.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any

_FAULT_FIELDS = frozenset({"mode", "latency", "hang", "error_rate", "poison_sku", "poison_status"})
_EVENT_FIELDS = {"event_id": str, "order_id": str, "sku": str, "occurred_at": str}


class Mode(StrEnum):
    HEALTHY = "healthy"
    SLOW = "slow"
    HANG = "hang"
    TRICKLE = "trickle"
    """Accept, then send the answer a byte at a time over ``hang`` seconds (a slow peer)."""
    DOWN = "down"
    FLAKY = "flaky"


def non_negative(data: dict[str, Any], names: tuple[str, ...]) -> dict[str, float]:
    """The named fields present in ``data`` as floats; ``ValueError`` if one is not >= 0."""
    values: dict[str, float] = {}
    for name in names:
        if name in data:
            v = data[name]
            if isinstance(v, bool) or not isinstance(v, int | float) or v < 0:
                raise ValueError(f"{name} must be a number >= 0")
            values[name] = float(v)
    return values


@dataclass(frozen=True, slots=True)
class Fault:
    mode: Mode = Mode.HEALTHY
    latency: float = 0.5
    """Extra seconds per request in ``slow`` mode."""
    hang: float = 3600.0
    """Seconds a request hangs in ``hang`` mode (longer than any client timeout), or
    its answer trickles in ``trickle`` mode."""
    error_rate: float = 0.3
    """Fraction of requests answered 500 in ``flaky`` mode."""
    poison_sku: str | None = None
    """A batch holding an event of this SKU is answered ``poison_status`` (a poison event)."""
    poison_status: int = 500

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Fault:
        """From a JSON object; raises ``ValueError`` naming the bad field."""
        unknown = set(data) - {
            "mode",
            "latency",
            "hang",
            "error_rate",
            "poison_sku",
            "poison_status",
        }
        if unknown:
            raise ValueError(f"unknown fault fields: {sorted(unknown)}")
        try:
            mode = Mode(data.get("mode", "healthy"))
        except ValueError:
            raise ValueError(
                f"mode must be one of {[m.value for m in Mode]}, not {data.get('mode')!r}"
            ) from None
        values = non_negative(data, ("latency", "hang", "error_rate"))
        if values.get("error_rate", 0.0) > 1:
            raise ValueError("error_rate must be between 0 and 1")
        poison = data.get("poison_sku")
        if poison is not None and (not isinstance(poison, str) or not poison):
            raise ValueError("poison_sku must be a non-empty string")
        status = data.get("poison_status", 500)
        if isinstance(status, bool) or not isinstance(status, int) or not 400 <= status <= 599:
            raise ValueError("poison_status must be an HTTP error status (400-599)")
        return cls(mode=mode, poison_sku=poison, poison_status=status, **values)


@dataclass(frozen=True, slots=True)
class Phase:
    duration: float
    fault: Fault


@dataclass(frozen=True, slots=True)
class Schedule:
    """Timed phases; after the last phase the last fault stays (or loops if ``repeat``)."""

    phases: tuple[Phase, ...]
    repeat: bool = False

    def fault_at(self, elapsed: float) -> Fault:
        if not self.phases:
            return Fault()
        total = sum(p.duration for p in self.phases)
        if self.repeat and total > 0:
            elapsed %= total
        for phase in self.phases:
            if elapsed < phase.duration:
                return phase.fault
            elapsed -= phase.duration
        return self.phases[-1].fault

    @classmethod
    def parse(cls, data: dict[str, Any]) -> Schedule:
        raw = data.get("phases")
        if not isinstance(raw, list) or not raw:
            raise ValueError("a scenario needs a non-empty 'phases' list")
        phases = []
        for n, item in enumerate(raw):
            if not isinstance(item, dict):
                raise ValueError(f"phases[{n}] must be an object")
            item = dict(item)
            duration = item.pop("duration", None)
            if isinstance(duration, bool) or not isinstance(duration, int | float) or duration <= 0:
                raise ValueError(f"phases[{n}].duration must be a number > 0")
            try:
                phases.append(Phase(float(duration), Fault.parse(item)))
            except ValueError as exc:
                raise ValueError(f"phases[{n}]: {exc}") from None
        return cls(tuple(phases), bool(data.get("repeat", False)))


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the simulator answers a request: status, how long it takes, Retry-After."""

    status: int
    delay: float = 0.0
    retry_after: float | None = None
    queued: float = 0.0
    """Seconds of the delay spent waiting behind work queued before it (none when idle)."""


@dataclass(slots=True)
class Capacity:
    """The FIFO server's state. ``rate`` 0 means unlimited capacity."""

    rate: float = 0.0
    overhead: float = 0.0
    queue_limit: float = 5000.0
    collapse: bool = False
    other_client: float = 0.0
    """Events/s another client sends to the same server (it takes that much of ``rate``)."""
    busy_until: float = 0.0
    other_accrued: float | None = None
    """Until when the other client's flow has been added to the queue."""
    other_served: float = 0.0
    """Events of the other client's the server took."""
    other_refused: float = 0.0
    """Events of the other client's refused: the queue was at its limit."""

    @staticmethod
    def changes(data: dict[str, Any]) -> dict[str, float | bool]:
        """Validated capacity changes from a JSON object; ``ValueError`` names the bad field."""
        unknown = set(data) - {"rate", "overhead", "queue_limit", "collapse", "other_client"}
        if unknown:
            raise ValueError(f"unknown capacity fields: {sorted(unknown)}")
        names = ("rate", "overhead", "queue_limit", "other_client")
        out: dict[str, float | bool] = {**non_negative(data, names)}
        if out.get("queue_limit") == 0:
            raise ValueError("queue_limit must be > 0")
        if "collapse" in data:
            if not isinstance(data["collapse"], bool):
                raise ValueError("collapse must be true or false")
            out["collapse"] = data["collapse"]
        return out

    def accrue(self, now: float) -> None:
        """Add the other client's flow since the last call to the queue, up to its limit.

        The flow is steady: on an idle server it is served as it comes (no queue while
        ``other_client`` < ``rate``); behind queued work it waits its turn.
        """
        since = now if self.other_accrued is None else min(self.other_accrued, now)
        self.other_accrued = now
        if self.other_client <= 0 or self.rate <= 0 or now <= since:
            return
        offered = self.other_client * (now - since)
        end = max(self.busy_until, since) + offered / self.rate
        room = now + self.queue_limit / self.rate
        refused = max(0.0, end - room) * self.rate
        self.busy_until = max(self.busy_until, min(end, room))
        self.other_served += offered - refused
        self.other_refused += refused

    def backlog(self, now: float) -> float:
        """Queued work, in events."""
        if self.rate <= 0:
            return 0.0
        self.accrue(now)
        return max(0.0, self.busy_until - now) * self.rate

    def queued_seconds(self, now: float) -> float:
        """Queued work, in seconds: how long a request arriving now waits before its own."""
        if self.rate <= 0:
            return 0.0
        return max(0.0, self.busy_until - now)

    def effective_rate(self, now: float) -> float:
        if not self.collapse or self.rate <= 0:
            return self.rate
        # Past half the queue limit, goodput falls: at the limit it is a third of the rate.
        pressure = max(0.0, self.backlog(now) / self.queue_limit - 0.5) * 2
        return self.rate / (1.0 + 2.0 * min(pressure, 1.0))

    def admit(self, now: float, events: int) -> Verdict:
        if self.rate <= 0:
            return Verdict(200, delay=self.overhead)
        backlog = self.backlog(now)
        if backlog + events > self.queue_limit:
            excess = backlog + events - self.queue_limit
            return Verdict(429, retry_after=max(1.0, math.ceil(excess / self.rate)))
        work = self.overhead + events / self.effective_rate(now)
        start = max(now, self.busy_until)
        self.busy_until = start + work
        return Verdict(200, delay=self.busy_until - now, queued=start - now)


def fault_verdict(
    fault: Fault, rng: random.Random, skus: frozenset[str] = frozenset()
) -> Verdict | None:
    """The answer a fault imposes, or None when the capacity model decides.

    ``skus``: the batch's SKUs, for the poison-event fault.
    """
    if fault.poison_sku is not None and fault.poison_sku in skus:
        return Verdict(fault.poison_status)
    if fault.mode is Mode.DOWN:
        return Verdict(503, retry_after=1.0)
    if fault.mode is Mode.HANG:
        return Verdict(200, delay=fault.hang)
    if fault.mode is Mode.FLAKY and rng.random() < fault.error_rate:
        return Verdict(500)
    return None


def extra_latency(fault: Fault) -> float:
    return fault.latency if fault.mode is Mode.SLOW else 0.0


@dataclass(slots=True)
class Checked:
    good: list[dict[str, Any]] = field(default_factory=list)
    bad: list[dict[str, str]] = field(default_factory=list)


def age(occurred_at: str, now: float) -> float | None:
    """Seconds from an event's RFC 3339 ``occurred_at`` to ``now`` (epoch seconds): its
    freshness when counted. None for a time without a zone, or one that does not parse."""
    try:
        moment = datetime.fromisoformat(occurred_at)
    except ValueError:
        return None
    if moment.tzinfo is None:
        return None
    return now - moment.timestamp()


def check_events(body: Any) -> Checked:
    """Validate a /v1/track body against the push contract, event by event."""
    if not isinstance(body, dict) or not isinstance(body.get("events"), list):
        raise ValueError("body must be an object with an 'events' list")
    out = Checked()
    for n, ev in enumerate(body["events"]):
        problem = _event_problem(ev)
        if problem is None:
            out.good.append(ev)
        else:
            ident = ev.get("event_id") if isinstance(ev, dict) else None
            out.bad.append({"index": str(n), "event_id": str(ident), "problem": problem})
    return out


def _event_problem(ev: Any) -> str | None:
    if not isinstance(ev, dict):
        return "event must be an object"
    for name, kind in _EVENT_FIELDS.items():
        if not isinstance(ev.get(name), kind) or not ev[name]:
            return f"{name} must be a non-empty string"
    qty = ev.get("qty")
    if isinstance(qty, bool) or not isinstance(qty, int) or qty <= 0:
        return "qty must be an integer > 0"
    weight = ev.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or weight <= 0:
        return "weight must be a number > 0"
    lines = ev.get("lines", 1)
    if isinstance(lines, bool) or not isinstance(lines, int) or lines < 1:
        return "lines must be an integer >= 1 (order lines an aggregate stands for)"
    error = ev.get("error", 0.0)
    if isinstance(error, bool) or not isinstance(error, int | float):
        return "error must be a number (how far qty * weight may overstate the SKU's total)"
    if not 0 <= error <= qty * weight * (1 + 1e-9):
        return "error must be within [0, qty * weight]"
    floor = ev.get("floor", 0.0)
    if isinstance(floor, bool) or not isinstance(floor, int | float) or floor < 0:
        return "floor must be a number >= 0 (the most a SKU its window did not list had)"
    return None
