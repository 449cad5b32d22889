"""The analytics event: what the outbox holds, the stream carries and analytics receives.

Pure data and pure functions only (no I/O): event ids are derived from the order
and the line number, so a re-sent event is recognisable downstream.
"""

from __future__ import annotations

import json
import zlib
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any


def event_id_for(order_id: str, line_no: int) -> str:
    """Stable id of the event for line ``line_no`` (0-based) of ``order_id``."""
    if line_no < 0:
        raise ValueError("line_no must be >= 0")
    return f"{order_id}:{line_no}"


MAX_SHARDS = 64
"""The most shards a queue may have."""


def shard_of(event_id: str, count: int) -> int:
    """The queue shard (0 to ``count`` - 1) of an event, by its order (the id before the
    last ':'), with a stable hash (CRC-32): every event of an order lands in one shard,
    whichever relay moves it."""
    if count == 1:
        return 0
    order, sep, _ = event_id.rpartition(":")
    return zlib.crc32((order if sep else event_id).encode()) % count


def rfc3339(moment: datetime) -> str:
    """Format an aware datetime as RFC 3339 in UTC with millisecond precision."""
    if moment.tzinfo is None:
        raise ValueError("datetime must be timezone-aware")
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def rfc3339_ms(epoch_ms: int) -> str:
    """RFC 3339 (UTC, milliseconds) of an epoch time in milliseconds."""
    return rfc3339(datetime.fromtimestamp(epoch_ms / 1000, UTC))


_COMPACT = json.JSONEncoder(separators=(",", ":"))


@dataclass(frozen=True, slots=True)
class Event:
    """One analytics event, as the push contract defines it (docs/contracts.md)."""

    event_id: str
    order_id: str
    sku: str
    qty: int
    weight: float
    occurred_at: str
    lines: int = 1
    """Order lines this event stands for: 1, or more for an aggregate (sent only then)."""
    error: float = 0.0
    """How far ``qty * weight`` may overstate this SKU's true total: 0 for an exact count; an
    aggregate from the bounded sketch (``queue/quota.py``) may stand for up to this much of
    other SKUs' lines, so the true total lies in ``[qty * weight - error, qty * weight]``
    (sent only when not 0)."""
    floor: float = 0.0
    """On an aggregate from a full sketch: the most any SKU that window's sketch does not
    list had in the window (its smallest counter when the window was sealed; every count
    it let go was no larger). So a SKU's true total over all windows is at most its
    counted total plus the floors of the sketch windows that did not list it (sent only
    when not 0)."""

    def to_json(self) -> str:
        # Built by hand, not through ``asdict``: this runs once per order line on the
        # order path, and dataclass introspection is a visible share of its profile.
        return _COMPACT.encode(self.to_dict())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event_id": self.event_id,
            "order_id": self.order_id,
            "sku": self.sku,
            "qty": self.qty,
            "weight": self.weight,
            "occurred_at": self.occurred_at,
        }
        if self.lines != 1:
            out["lines"] = self.lines
        if self.error:
            out["error"] = self.error
        if self.floor:
            out["floor"] = self.floor
        return out

    @classmethod
    def from_json(cls, raw: str | bytes) -> Event:
        """Decode an event; raises ``ValueError`` naming what is wrong."""
        try:
            data = json.loads(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise ValueError(f"event is not JSON: {exc}") from exc
        if not isinstance(data, dict):
            raise ValueError("event must be a JSON object")
        try:
            event = cls(
                event_id=str(data["event_id"]),
                order_id=str(data["order_id"]),
                sku=str(data["sku"]),
                qty=int(data["qty"]),
                weight=float(data.get("weight", 1.0)),
                occurred_at=str(data["occurred_at"]),
                lines=int(data.get("lines", 1)),
                error=float(data.get("error", 0.0)),
                floor=float(data.get("floor", 0.0)),
            )
        except KeyError as exc:
            raise ValueError(f"event lacks field {exc.args[0]!r}") from exc
        except (TypeError, ValueError) as exc:
            raise ValueError(f"event has a field of the wrong type: {exc}") from exc
        return event

    def problem(self) -> str | None:
        """Why popularity cannot count this event (``from_json`` checks shape, not ranges)."""
        if self.qty < 1 or not self.weight > 0 or self.lines < 1:
            return "an event needs qty >= 1, weight > 0 and lines >= 1"
        if not 0 <= self.error <= self.qty * self.weight or self.floor < 0:
            return "an event's error must be within [0, qty * weight], its floor >= 0"
        return None


def countable(payload: str | bytes) -> Event | None:
    """The event in ``payload`` if popularity can count it, else None.

    Shedding passes what it cannot read on untouched: the forwarder dead-letters
    what analytics refuses.
    """
    try:
        event = Event.from_json(payload)
    except ValueError:
        return None
    return None if event.problem() else event


LATENCY_BOUNDS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 30.0
)  # fmt: skip
"""Upper bounds (seconds) of the push latency histogram in ``PushTotals`` (then +Inf)."""


@dataclass(frozen=True, slots=True)
class PushTotals:
    """A forwarder's pushes since it started, as counters that only grow (as Prometheus
    counters do): the controller takes their differences between two snapshots, so what
    it judges is exactly what happened between them, never a window that outlives it."""

    started: float
    """Wall-clock time the counters started: another value means they began again."""
    pushes: int = 0
    """Pushes answered or failed (a push whose ownership expired before it went out is not
    counted)."""
    accepted_events: int = 0
    congested: int = 0
    """Pushes answered 429/503 or timed out: signs analytics is saturated."""
    failed: int = 0
    """Other failed pushes (5xx, refused or reset connections): analytics down or failing."""
    delayed: int = 0
    """Answered pushes slower than the forwarder's latency band for their size (queueing at
    analytics: delay-based congestion, normalised for the push's size)."""
    latency_sum: float = 0.0
    """Seconds, over the pushes analytics answered."""
    sent_seconds: float = 0.0
    """Seconds, over every push that went out, answered or not (a timeout counts its wait)."""
    latency_counts: tuple[int, ...] = (0,) * (len(LATENCY_BOUNDS) + 1)
    """Answered pushes per latency bucket (``LATENCY_BOUNDS``, then +Inf); not cumulative."""

    def add(
        self,
        accepted_events: int,
        congested: bool,
        failed: bool,
        latency: float | None,
        delayed: bool = False,
        duration: float | None = None,
    ) -> PushTotals:
        counts = self.latency_counts
        total = self.latency_sum
        if latency is not None:
            bucket = next(
                (i for i, bound in enumerate(LATENCY_BOUNDS) if latency <= bound),
                len(LATENCY_BOUNDS),
            )
            counts = (*counts[:bucket], counts[bucket] + 1, *counts[bucket + 1 :])
            total += latency
        return PushTotals(
            started=self.started,
            pushes=self.pushes + 1,
            accepted_events=self.accepted_events + accepted_events,
            congested=self.congested + congested,
            failed=self.failed + failed,
            delayed=self.delayed + delayed,
            latency_sum=total,
            sent_seconds=self.sent_seconds + (duration or latency or 0.0),
            latency_counts=counts,
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "started": self.started,
            "pushes": self.pushes,
            "accepted_events": self.accepted_events,
            "congested": self.congested,
            "failed": self.failed,
            "delayed": self.delayed,
            "latency_sum": round(self.latency_sum, 6),
            "sent_seconds": round(self.sent_seconds, 6),
            "latency_counts": list(self.latency_counts),
        }

    @classmethod
    def from_json(cls, data: Any) -> PushTotals:
        counts = tuple(int(n) for n in data["latency_counts"])
        if len(counts) != len(LATENCY_BOUNDS) + 1 or min(counts) < 0:
            raise ValueError(f"latency_counts: {len(LATENCY_BOUNDS) + 1} counts >= 0 expected")
        out = cls(
            started=float(data["started"]),
            pushes=int(data["pushes"]),
            accepted_events=int(data["accepted_events"]),
            congested=int(data["congested"]),
            failed=int(data["failed"]),
            delayed=int(data.get("delayed", 0)),
            latency_sum=float(data["latency_sum"]),
            sent_seconds=float(data.get("sent_seconds", 0.0)),
            latency_counts=counts,
        )
        if min(out.pushes, out.accepted_events, out.congested, out.failed, out.delayed) < 0:
            raise ValueError("push totals must be >= 0")
        return out


@dataclass(frozen=True, slots=True)
class PushSpan:
    """A forwarder's pushes that ended within the last ``span_seconds``."""

    span_seconds: float
    pushes: int
    latency_p50: float | None
    latency_p99: float | None
    outcomes: dict[str, int]
    """Pushes by outcome (``control.push_outcome.Outcome`` values)."""
    events_per_second: float
    """Events analytics accepted per second, averaged over the last ``rate_seconds``."""
    rate_seconds: float

    def to_json(self) -> dict[str, Any]:
        return {
            "span_seconds": self.span_seconds,
            "pushes": self.pushes,
            "latency_p50": self.latency_p50,
            "latency_p99": self.latency_p99,
            "outcomes": dict(self.outcomes),
            "events_per_second": self.events_per_second,
            "rate_seconds": self.rate_seconds,
        }

    @classmethod
    def from_json(cls, data: Any) -> PushSpan:
        # "window_seconds": the name forwarders of version 0.1.0 publish the span under
        span = float(data["span_seconds"] if "span_seconds" in data else data["window_seconds"])
        return cls(
            span_seconds=span,
            pushes=int(data["pushes"]),
            latency_p50=_seconds(data["latency_p50"]),
            latency_p99=_seconds(data["latency_p99"]),
            outcomes={str(k): int(v) for k, v in dict(data["outcomes"]).items()},
            events_per_second=float(data["events_per_second"]),
            rate_seconds=float(data.get("rate_seconds", span)),
        )


@dataclass(frozen=True, slots=True)
class ForwarderStats:
    """What each forwarder publishes for the controller (JSON under a TTL): written by its
    pacer with ``to_json`` and read back with ``from_json``, so both sides share one shape."""

    at: float
    """Wall-clock time of the snapshot."""
    adaptive: bool
    limit_events: float
    """Events the forwarder may have in flight (its adaptive limit)."""
    in_flight_events: int
    push_size: int
    """Events the next push may carry."""
    breaker: str
    """The circuit breaker's mode: closed, open or half_open."""
    budget: float | None
    """The rate budget last seen (events/s shared by every forwarder; None: none set)."""
    overall: PushSpan
    """The pushes of the longer span (latency percentiles, outcomes, accepted rate)."""
    latency_p90: float | None
    recent: PushSpan
    """The pushes of the last few seconds (shown by views; a controller falls back on it
    for a forwarder that publishes no ``totals``)."""
    totals: PushTotals | None = None
    """Counters since the forwarder started: what the controller judges each tick by
    (None from forwarders of version 0.1.0)."""
    redis_full: bool = False
    """The queue's Redis is at its ``maxmemory``: it refuses new writes, and the forwarder
    drains it with the commands it still serves."""
    last_failure: str | None = None
    """Why the last push that analytics did not accept failed (its status and the first
    words of its answer: a redirect, a WAF's refusal), None when none has."""

    def to_json(self) -> dict[str, Any]:
        out = self.overall.to_json()
        out.update(
            at=self.at,
            adaptive=self.adaptive,
            limit_events=self.limit_events,
            in_flight_events=self.in_flight_events,
            push_size=self.push_size,
            breaker=self.breaker,
            budget=self.budget,
            latency_p90=self.latency_p90,
            recent=self.recent.to_json(),
        )
        if self.totals is not None:
            out["totals"] = self.totals.to_json()
        out["redis_full"] = self.redis_full
        out["last_failure"] = self.last_failure
        return out

    @classmethod
    def from_json(cls, data: Any) -> ForwarderStats:
        """The record ``to_json`` wrote; ``ValueError`` when ``data`` has another shape."""
        try:
            return cls(
                at=float(data["at"]),
                adaptive=bool(data["adaptive"]),
                limit_events=float(data["limit_events"]),
                in_flight_events=int(data["in_flight_events"]),
                push_size=int(data["push_size"]),
                breaker=str(data["breaker"]),
                budget=_seconds(data["budget"]),
                overall=PushSpan.from_json(data),
                latency_p90=_seconds(data["latency_p90"]),
                recent=PushSpan.from_json(data["recent"]),
                totals=None if data.get("totals") is None else PushTotals.from_json(data["totals"]),
                redis_full=bool(data.get("redis_full", False)),
                last_failure=None
                if data.get("last_failure") is None
                else str(data["last_failure"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ValueError(f"not a forwarder's statistics: {exc!r}") from None


def _seconds(value: Any) -> float | None:
    return None if value is None else float(value)
