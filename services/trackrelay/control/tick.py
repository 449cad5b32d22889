"""What happened at analytics between two observations: one tick's fresh figures (pure).

Each forwarder publishes counters that only grow (``events.PushTotals``); a tick is
their difference since the forwarder's previous snapshot, summed over the fleet. So
the controller judges exactly the pushes that ended within the tick, and knows when
the oldest of them could have started (``start``): an observation taken wholly
after a cut is one whose ``start`` is later than the cut.

A forwarder that publishes no counters (version 0.1.0) contributes its recent span
instead, as covering ``[at - span, at]``: its figures are older, and the tick says
so by its earlier ``start``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from trackrelay.events import LATENCY_BOUNDS, PushTotals

LONGEST = 5.0
"""Seconds a forwarder's interval may stretch over ticks in which none of its pushes
ended; past that, an interval without pushes counts (as none delivered)."""


@dataclass(frozen=True, slots=True)
class Sample:
    """One forwarder's pushes between two of its snapshots."""

    start: float
    end: float
    pushes: int
    accepted_events: int
    congested: int
    failed: int
    delayed: int = 0
    latency_sum: float = 0.0
    sent_seconds: float = 0.0
    latency_counts: tuple[int, ...] = ()
    """Per bucket of ``LATENCY_BOUNDS`` then +Inf; empty: only ``latency_p99`` is known."""
    latency_p99: float | None = None
    """Given directly (from a span) when ``latency_counts`` is empty."""


@dataclass(frozen=True, slots=True)
class Tick:
    """The fleet's pushes over one tick."""

    start: float
    """The earliest moment any of these pushes may have started."""
    end: float
    pushes: int
    congested: int
    failed: int
    delayed: int
    """Answered pushes slower than their forwarder's latency band for their size."""
    delivered: float
    """Events/s analytics accepted (each forwarder's own interval, summed)."""
    latency_p99: float | None
    latency_mean: float | None
    forwarders: int
    """Forwarders with fresh figures."""
    push_seconds: float | None = None
    """Mean time a push of this tick was out, answered or not (a timeout counts its wait)."""

    @property
    def settle(self) -> float:
        """How long before ``start`` the oldest of these pushes may have been sent."""
        return max(self.latency_mean or 0.0, self.push_seconds or 0.0)

    @property
    def congested_share(self) -> float:
        return self.congested / self.pushes if self.pushes else 0.0

    @property
    def failed_share(self) -> float:
        return self.failed / self.pushes if self.pushes else 0.0

    @property
    def delayed_share(self) -> float:
        return self.delayed / self.pushes if self.pushes else 0.0


def difference(before: PushTotals, after: PushTotals, start: float, end: float) -> Sample | None:
    """``after - before`` as one sample, or None when the counters began again (a restart:
    the next tick has the difference from the new start)."""
    if after.started != before.started or after.pushes < before.pushes:
        return None
    return Sample(
        start=start,
        end=end,
        pushes=after.pushes - before.pushes,
        accepted_events=after.accepted_events - before.accepted_events,
        congested=after.congested - before.congested,
        failed=after.failed - before.failed,
        delayed=after.delayed - before.delayed,
        latency_sum=after.latency_sum - before.latency_sum,
        sent_seconds=after.sent_seconds - before.sent_seconds,
        latency_counts=tuple(
            a - b for a, b in zip(after.latency_counts, before.latency_counts, strict=True)
        ),
    )


def quantile(counts: tuple[int, ...], q: float) -> float | None:
    """The ``q`` quantile of a latency histogram (``LATENCY_BOUNDS`` buckets, then +Inf),
    interpolated within its bucket as Prometheus' ``histogram_quantile`` does."""
    total = sum(counts)
    if total <= 0:
        return None
    rank = q * total
    seen = 0
    for i, n in enumerate(counts):
        if n and seen + n >= rank:
            if i >= len(LATENCY_BOUNDS):
                return LATENCY_BOUNDS[-1]
            low = LATENCY_BOUNDS[i - 1] if i else 0.0
            return low + (LATENCY_BOUNDS[i] - low) * (rank - seen) / n
        seen += n
    return LATENCY_BOUNDS[-1]


def combine(samples: Iterable[Sample]) -> Tick | None:
    """The fleet's tick from each forwarder's sample; None when no forwarder pushed."""
    got = [s for s in samples if s.end > s.start]
    pushes = sum(s.pushes for s in got)
    if not pushes:
        return None
    counts = [0] * (len(LATENCY_BOUNDS) + 1)
    answered = 0
    latency_sum = 0.0
    for s in got:
        for i, n in enumerate(s.latency_counts):
            counts[i] += n
        answered += sum(s.latency_counts)
        latency_sum += s.latency_sum
    p99 = quantile(tuple(counts), 0.99)
    direct = [s.latency_p99 for s in got if not s.latency_counts and s.latency_p99 is not None]
    if direct:
        p99 = max([*direct, *([p99] if p99 is not None else [])])
    return Tick(
        start=min(s.start for s in got),
        end=max(s.end for s in got),
        pushes=pushes,
        congested=sum(s.congested for s in got),
        failed=sum(s.failed for s in got),
        delayed=sum(s.delayed for s in got),
        delivered=sum(s.accepted_events / (s.end - s.start) for s in got),
        latency_p99=p99,
        latency_mean=latency_sum / answered if answered else p99,
        forwarders=len(got),
        push_seconds=sum(s.sent_seconds for s in got) / pushes
        if any(s.sent_seconds for s in got)
        else None,
    )


Seen = Mapping[str, tuple[float, PushTotals]]
"""Each forwarder's last snapshot the controller used: (its time, its counters)."""


def fleet_tick(
    snapshots: Iterable[tuple[str, float, PushTotals | None, Sample | None]], seen: Seen
) -> tuple[Tick | None, dict[str, tuple[float, PushTotals]]]:
    """The tick since ``seen``, and what to remember for the next one.

    ``snapshots``: per forwarder its name, snapshot time, counters (None: it publishes
    none) and, for one without counters, the sample its recent span stands for. A
    forwarder seen for the first time gives no sample yet (its counters' history is not
    this tick's), nor does one whose snapshot has not moved since the last tick, nor
    one none of whose pushes ended since (for up to ``LONGEST`` seconds: its next
    sample covers both).
    """
    samples: list[Sample] = []
    remembered: dict[str, tuple[float, PushTotals]] = {}
    for name, at, totals, span in snapshots:
        if totals is None:
            if span is not None:
                samples.append(span)
            continue
        remembered[name] = (at, totals)
        last = seen.get(name)
        if last is None or at <= last[0]:
            if last is not None and at <= last[0]:
                remembered[name] = last
            continue
        sample = difference(last[1], totals, last[0], at)
        if sample is not None and sample.pushes == 0 and at - last[0] < LONGEST:
            # No push ended yet (pushes slower than a tick): the next tick covers this
            # one too, rather than an empty tick reading as nothing delivered.
            remembered[name] = last
            continue
        if sample is not None:
            samples.append(sample)
    return combine(samples), remembered
