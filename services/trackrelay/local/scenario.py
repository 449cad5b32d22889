"""The demo's story as data: timed phases of analytics behaviour and shop load.

A scenario is a JSON (or YAML) object ``{"phases": [...]}``; each phase has a
``name``, a ``seconds`` length, the ``load`` in orders/s, and what analytics
does: ``fault`` (the simulator's ``/admin/fault`` body) and ``capacity`` (its
``/admin/capacity`` body). ``--duration`` scales every phase so the phases add
up to it. The embedded default tells the demo's story (``DEFAULT``) in two minutes.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trackrelay.analytics_sim.model import Fault

UNLIMITED = {"rate": 0, "overhead": 0.0, "queue_limit": 5000, "collapse": False}


@dataclass(frozen=True, slots=True)
class Phase:
    name: str
    seconds: float
    load: float
    fault: dict[str, Any] = field(default_factory=lambda: {"mode": "healthy"})
    capacity: dict[str, Any] = field(default_factory=lambda: dict(UNLIMITED))
    note: str = ""


@dataclass(frozen=True, slots=True)
class Scenario:
    phases: tuple[Phase, ...]

    @property
    def seconds(self) -> float:
        return sum(p.seconds for p in self.phases)

    def scaled(self, duration: float) -> Scenario:
        """The same story in ``duration`` seconds (every phase scaled alike)."""
        if duration <= 0:
            raise ValueError("duration must be > 0 seconds")
        k = duration / self.seconds
        return Scenario(tuple(_with_seconds(p, p.seconds * k) for p in self.phases))

    def at(self, elapsed: float) -> tuple[int, Phase]:
        """The phase (index, phase) running ``elapsed`` seconds into the story."""
        end = 0.0
        for i, phase in enumerate(self.phases):
            end += phase.seconds
            if elapsed < end:
                return i, phase
        return len(self.phases) - 1, self.phases[-1]

    def bounds(self) -> list[tuple[str, float, float]]:
        """(name, start, end) of each phase, in seconds from the start."""
        out, start = [], 0.0
        for p in self.phases:
            out.append((p.name, start, start + p.seconds))
            start += p.seconds
        return out


def _with_seconds(p: Phase, seconds: float) -> Phase:
    return Phase(p.name, seconds, p.load, p.fault, p.capacity, p.note)


def parse(data: Any) -> Scenario:
    """A scenario from its JSON form; ``ValueError`` naming the phase and field at fault."""
    if not isinstance(data, dict) or not isinstance(data.get("phases"), list):
        raise ValueError('a scenario is an object with a "phases" list')
    if not data["phases"]:
        raise ValueError("a scenario needs at least one phase")
    phases = []
    for i, raw in enumerate(data["phases"]):
        where = f"phases[{i}]"
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: must be an object")
        unknown = set(raw) - {"name", "seconds", "load", "fault", "capacity", "note"}
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {', '.join(sorted(unknown))}")
        name = raw.get("name", f"phase {i + 1}")
        for key in ("seconds", "load"):
            v = raw.get(key)
            if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
                raise ValueError(f"{where}.{key}: must be a number > 0")
        fault = raw.get("fault", {"mode": "healthy"})
        try:
            Fault.parse(fault)
        except ValueError as exc:
            raise ValueError(f"{where}.fault: {exc}") from None
        capacity = {**UNLIMITED, **raw.get("capacity", {})}
        phases.append(
            Phase(
                str(name),
                float(raw["seconds"]),
                float(raw["load"]),
                fault,
                capacity,
                str(raw.get("note", "")),
            )
        )
    return Scenario(tuple(phases))


def load(path: Path) -> Scenario:
    """A scenario file (JSON, or YAML when PyYAML is installed)."""
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml

        return parse(yaml.safe_load(text))
    try:
        return parse(json.loads(text))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON ({exc})") from None


DEFAULT = Scenario(
    (
        Phase(
            "healthy",
            20,
            40,
            {"mode": "slow", "latency": 0.05},
            note="analytics answers in 50 ms; the budget has room",
        ),
        Phase(
            "analytics slow",
            18,
            40,
            {"mode": "slow", "latency": 1.2},
            note="1.2 s a push whatever our rate: not congestion, so the budget holds "
            "while the forwarders find the pace",
        ),
        Phase(
            "timeouts",
            16,
            40,
            {"mode": "hang", "hang": 30},
            note="pushes time out; breakers open; events wait in the queue",
        ),
        Phase(
            "overloaded",
            18,
            40,
            {"mode": "slow", "latency": 0.05},
            {"rate": 60, "queue_limit": 40},
            note="analytics takes 60 ev/s and answers 429 beyond: one cut per episode, "
            "then back to the rate it took well",
        ),
        Phase(
            "quota pressure",
            22,
            80,
            {"mode": "down"},
            note="analytics down and a sale doubles the orders: the queue nears its quota",
        ),
        Phase(
            "recovery",
            26,
            40,
            {"mode": "slow", "latency": 0.3},
            note="analytics is back at 300 ms a push: the budget grows, forwarders scale out "
            "as far as it lets them, the backlog drains",
        ),
    )
)
"""Two minutes: healthy -> slow -> timeouts -> overloaded -> quota pressure -> recovery."""
