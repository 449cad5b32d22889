"""What the simulator remembers: counts per SKU, per second and per status, the running
fault or scenario, and the journal that lets its counts survive a restart."""

from __future__ import annotations

import collections
import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trackrelay.analytics_sim.model import Capacity, Fault, Schedule
from trackrelay.control.percentile import percentile

TIMELINE_SECONDS = 3600


@dataclass
class Second:
    """One second of the simulator's life, keyed by the wall-clock second a request arrived."""

    accepted: int = 0
    received: int = 0
    """Events in well-formed requests, whatever the answer (attempts)."""
    statuses: collections.Counter[int] = field(default_factory=collections.Counter)
    latencies: list[float] = field(default_factory=list)
    """Response times of answered requests (seconds), as the simulator served them."""
    served: list[tuple[float, float]] = field(default_factory=list)
    """(response time, idle response time) of each accepted request (seconds): the idle one
    leaves out the time it waited behind work queued before it."""
    freshness: list[float] = field(default_factory=list)
    """Seconds from each new event's ``occurred_at`` (its order's moment) to its count."""

    def as_dict(self, at: int, raw: bool = False) -> dict[str, Any]:
        ordered = sorted(self.latencies)
        fresh = sorted(self.freshness)
        return {
            "t": at,
            "accepted": self.accepted,
            "received": self.received,
            "statuses": {str(k): v for k, v in sorted(self.statuses.items())},
            "p50": percentile(ordered, 0.5),
            "p99": percentile(ordered, 0.99),
            "max": ordered[-1] if ordered else None,
            "freshness_p50": percentile(fresh, 0.5),
            "freshness_p99": percentile(fresh, 0.99),
            **({"latencies": ordered, "served": self.served, "freshness": fresh} if raw else {}),
        }


@dataclass
class SimState:
    capacity: Capacity
    rng: random.Random
    fault: Fault = field(default_factory=Fault)
    schedule: Schedule | None = None
    schedule_started: float = 0.0
    seen: set[str] = field(default_factory=set)
    popularity: collections.Counter[str] = field(default_factory=collections.Counter)
    errors: collections.Counter[str] = field(default_factory=collections.Counter)
    """Per SKU: how far its popularity may overstate the truth (the sum of its events'
    ``error``: counts from trackrelay's bounded sketch)."""
    floors: dict[str, float] = field(default_factory=dict)
    """Per sketch window (an aggregate's ``order_id``): the most a SKU it did not list had."""
    floors_listed: collections.Counter[str] = field(default_factory=collections.Counter)
    """Per SKU: the floors of the sketch windows that listed it (their floor is no slack
    for it)."""
    inflight: collections.Counter[str] = field(default_factory=collections.Counter)
    requests: collections.Counter[int] = field(default_factory=collections.Counter)
    accepted: int = 0
    lines: int = 0
    """Order lines the accepted events stand for (an aggregate counts its ``lines``)."""
    duplicates: int = 0
    overlaps: int = 0
    timeline: dict[int, Second] = field(default_factory=dict)
    """Per wall-clock second: what was accepted, answered and how fast (benchmarks read it)."""

    def second(self, at: float) -> Second:
        key = int(at)
        if key not in self.timeline:
            self.timeline[key] = Second()
            while len(self.timeline) > TIMELINE_SECONDS:
                del self.timeline[min(self.timeline)]
        return self.timeline[key]

    def count(
        self,
        event_id: str,
        sku: str,
        amount: float,
        lines: int,
        error: float = 0.0,
        floor: float = 0.0,
        window: str = "",
    ) -> None:
        """Count one new event (the caller checked it is not a duplicate)."""
        self.seen.add(event_id)
        self.popularity[sku] += amount  # type: ignore[assignment]  # Counter of floats
        if error:
            self.errors[sku] += error  # type: ignore[assignment]  # Counter of floats
        if floor:
            self.floors[window] = floor
            self.floors_listed[sku] += floor  # type: ignore[assignment]  # Counter of floats
        self.lines += lines

    def bounds(self, sku: str, floors: float | None = None) -> tuple[float, float]:
        """The least and the most ``sku``'s true total can be, from the counts' bounds
        (``floors``: the sum of every window's floor, when the caller has it already)."""
        count = self.popularity.get(sku, 0.0)
        total = sum(self.floors.values()) if floors is None else floors
        slack = total - self.floors_listed.get(sku, 0.0)
        return count - self.errors.get(sku, 0.0), count + max(0.0, slack)

    def current_fault(self, now: float) -> Fault:
        if self.schedule is not None:
            return self.schedule.fault_at(now - self.schedule_started)
        return self.fault

    def snapshot(self, now: float) -> dict[str, Any]:
        fault = self.current_fault(now)
        return {
            "mode": fault.mode.value,
            "fault": {
                "mode": fault.mode.value,
                "latency": fault.latency,
                "hang": fault.hang,
                "error_rate": fault.error_rate,
                "poison_sku": fault.poison_sku,
                "poison_status": fault.poison_status,
            },
            "scenario": self.schedule is not None,
            "accepted": self.accepted,
            "lines": self.lines,
            "duplicates": self.duplicates,
            "overlaps": self.overlaps,
            "requests": {str(k): v for k, v in sorted(self.requests.items())},
            "backlog_events": self.capacity.backlog(now),
            "capacity": {
                "rate": self.capacity.rate,
                "overhead": self.capacity.overhead,
                "queue_limit": self.capacity.queue_limit,
                "collapse": self.capacity.collapse,
                "other_client": self.capacity.other_client,
            },
            "other_client": {
                "served": self.capacity.other_served,
                "refused": self.capacity.other_refused,
            },
            "distinct_skus": len(self.popularity),
        }


class Journal:
    """Accepted events, one JSON array of records per accepted request, replayed at start."""

    def __init__(self, path: Path, state: SimState) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists():
            with path.open() as f:
                for line in f:
                    try:
                        records = json.loads(line)
                    except ValueError:
                        break  # a line cut short by a crash: what came before it counts
                    for event_id, sku, amount, lines, *bounds in records:
                        if event_id not in state.seen:
                            state.count(event_id, sku, amount, lines, *bounds)
                            state.accepted += 1
        self.file = path.open("a", encoding="utf-8")

    def write(self, records: list[tuple[str, str, float, int, float, float, str]]) -> None:
        self.file.write(json.dumps(records) + "\n")
        self.file.flush()  # in the kernel: survives the process being killed

    def clear(self) -> None:
        self.file.truncate(0)


def load_scenario(path: str) -> Schedule:
    with open(path, encoding="utf-8") as fh:
        text = fh.read()
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        import yaml  # scenario files may be YAML too

        data = yaml.safe_load(text)
    if not isinstance(data, dict):
        raise ValueError(f"scenario {path}: expected an object with 'phases'")
    try:
        return Schedule.parse(data)
    except ValueError as exc:
        raise ValueError(f"scenario {path}: {exc}") from None
