"""The controller with everything else, as ``trackrelay up`` runs it, in the five scenarios
of ``benchmarks/control.py``: what must hold whatever this machine's speed.

Events go straight into the stream at a set rate (the order path is not what is tested);
the simulator plays analytics; ``up``'s status file is read every quarter second. The
rates are small next to what one forwarder pushes (tens of thousands of events/s), so
the simulator's capacity, not this machine, is the bottleneck.
"""

from __future__ import annotations

import collections
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.integration.conftest import Sim, add_events, wait_for
from trackrelay.control.controller import Spec
from trackrelay.events import Event
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.local.stack import read_status
from trackrelay.runtime.ports import free_port

FLOOR = Spec().budget_min


@dataclass
class Sample:
    at: float
    budget: float | None
    last_good: float | None
    healthy: bool | None


@dataclass
class Stack:
    """``trackrelay up`` on its own Redis (so events can be added directly) and a feeder."""

    tmp: Path
    sim: Sim
    redis: EmbeddedRedis = field(init=False)
    samples: list[Sample] = field(default_factory=list)
    reasons: dict[tuple[float, str], str] = field(default_factory=dict)
    """Every reason seen in the status: (time, text) -> kind."""
    fed: int = 0
    rate: float = 0.0
    _stop: threading.Event = field(default_factory=threading.Event)
    _threads: list[threading.Thread] = field(default_factory=list)

    def start(self, *args: str) -> None:
        self.redis = EmbeddedRedis(self.tmp / "redis").start()
        port = free_port()
        self.data = self.tmp / "data"
        self.up = spawn_role(
            [
                *("up", "--analytics-url", self.sim.url, "--port", str(port)),
                *("--data-dir", str(self.data), *args),
            ],
            {"TRACKRELAY_REDIS_URL": self.redis.url},
            self.tmp / "up.log",
        )
        wait_http(f"http://127.0.0.1:{port}/readyz", 60, self.up)
        for target in (self._feed, self._watch):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self._threads.append(thread)

    def _feed(self) -> None:
        """``rate`` events/s in tenths of a second, whatever the rate is set to meanwhile."""
        owed = 0.0
        for k in itertools.count():
            if self._stop.wait(0.1):
                return
            owed += self.rate / 10
            n = int(owed)
            if n:
                add_events(self.redis.url, n, prefix=f"e{k}-")
                self.fed += n
                owed -= n

    def _watch(self) -> None:
        while not self._stop.wait(0.25):
            try:
                status = read_status(self.data)
            except (FileNotFoundError, ValueError):
                continue
            d = status.get("decision") or {}
            self.samples.append(
                Sample(time.time(), d.get("budget"), d.get("last_good"), d.get("healthy"))
            )
            for r in status.get("reasons", []):
                self.reasons[(r["at"], r["text"])] = r["kind"]

    def since(self, at: float) -> list[Sample]:
        return [s for s in self.samples if s.at >= at and s.budget is not None]

    def cuts(self, since: float = 0.0) -> list[str]:
        return [
            t for (at, t), k in sorted(self.reasons.items()) if k == "budget-cut" and at >= since
        ]

    def drained(self, timeout: float, already: int = 0) -> None:
        """Wait until analytics has every event fed (``already``: accepted from others)."""
        self.rate = 0
        time.sleep(0.3)  # the feeder's last tenth
        wait_for(
            lambda: self.sim.state()["accepted"] - already >= self.fed,
            timeout,
            "every event delivered",
            lambda: f"{self.sim.state()['accepted'] - already} of {self.fed}",
        )

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(5)
        stop_all([self.up])
        self.redis.stop()


@pytest.fixture
def stack(tmp_path: Path, start_sim: Callable[..., Sim]) -> Iterator[Callable[..., Stack]]:
    made: list[Stack] = []

    def make(*args: str) -> Stack:
        s = Stack(tmp_path, start_sim())
        made.append(s)
        s.start(*args)
        return s

    yield make
    for s in made:
        s.stop()


def timeline(sim: Sim, since: float) -> list[dict[str, Any]]:
    return list(sim.call(f"/admin/timeline?since={since}")["seconds"])


def overloaded_share(seconds: list[dict[str, Any]], other: Other | None = None) -> float:
    """Share of our pushes answered 429/503 (the other client's answers left out)."""
    answers = refused = 0
    for x in seconds:
        theirs = other.statuses.get(x["t"], collections.Counter()) if other else {}
        for status, n in x["statuses"].items():
            n -= theirs.get(int(status), 0)
            answers += n
            refused += n if status in ("429", "503") else 0
    return refused / answers if answers else 0.0


@dataclass
class Other:
    """Another client of analytics, pushing its own events at a fixed rate, never slowing."""

    sim: Sim
    rate: float
    accepted: int = 0
    statuses: dict[int, collections.Counter[int]] = field(default_factory=dict)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        for k in itertools.count():
            if self.stop.wait(0.1):
                return
            n = int(self.rate / 10)
            events = [
                Event(f"x{k}:{i}", f"x{k}", "other", 1, 1.0, "2026-01-01T00:00:00.000Z").to_json()
                for i in range(n)
            ]
            body = json.dumps({"events": [json.loads(e) for e in events]}).encode()
            req = urllib.request.Request(
                self.sim.url + "/v1/track", body, {"content-type": "application/json"}
            )
            try:
                with urllib.request.urlopen(req, timeout=5) as r:
                    status = int(r.status)
            except urllib.error.HTTPError as exc:
                status = exc.code
            except OSError:
                continue
            self.statuses.setdefault(int(time.time()), collections.Counter())[status] += 1
            if 200 <= status < 300:
                self.accepted += n


def test_a_slow_analytics_that_is_not_overloaded_gets_what_arrives(
    stack: Callable[..., Stack],
) -> None:
    """1 s per push whatever our rate, ample capacity, 80 ev/s: our rate cannot make it
    faster, so the budget is never cut to its floor and everything arrives."""
    s = stack()
    s.sim.fault(mode="slow", latency=1.0)
    s.rate = 80
    started = time.time()
    time.sleep(20)
    s.drained(60)
    assert s.since(started), "no status seen"
    assert min(x.budget or 0 for x in s.since(started)) > FLOOR
    assert len(s.cuts()) <= 1, s.cuts()


def test_after_an_outage_the_budget_is_back_at_the_last_good_rate_within_seconds(
    stack: Callable[..., Stack],
) -> None:
    """200 ev/s taken well, then analytics down for 10 s (503 to everything) while events
    keep coming, then back: one cut as it goes, none while the breakers hold the pushes
    back, and the budget at 0.9 of the last good rate again within 8 s."""
    s = stack()
    s.sim.call("/admin/capacity", {"rate": 500, "queue_limit": 250})
    s.rate = 200
    wait_for(lambda: any((x.last_good or 0) > 150 for x in s.samples), 30, "a good rate seen")
    time.sleep(3)
    good = max(x.last_good or 0 for x in s.samples)
    s.sim.fault(mode="down")
    down = time.time()
    time.sleep(10)
    s.rate = 0
    assert len(s.cuts(since=down)) <= 2, s.cuts(since=down)
    s.sim.fault(mode="healthy")
    back = time.time()
    wait_for(
        lambda: any((x.budget or 0) >= 0.9 * good for x in s.since(back)),
        8,
        "the budget back at the last good rate",
        lambda: f"budgets {[x.budget for x in s.since(back)]}, last good {good:.0f}",
    )
    s.drained(60)


def test_capacity_below_arrivals_runs_near_capacity_without_collapse(
    stack: Callable[..., Stack],
) -> None:
    """Capacity 60 ev/s, 80 arriving: analytics is the bottleneck; few 429s, and what
    analytics takes stays near its capacity (a cut after a burst of 429s is half of what
    that second delivered, and is made up at the next tick)."""
    s = stack()
    s.sim.call("/admin/capacity", {"rate": 60, "queue_limit": 30})
    s.rate = 80
    started = time.time()
    time.sleep(25)
    seconds = timeline(s.sim, started + 5)[:-1]  # whole seconds only
    assert overloaded_share(seconds) <= 0.05, seconds
    assert sum(x["accepted"] for x in seconds) >= 0.7 * 60 * len(seconds), seconds


@pytest.mark.parametrize("change", ["halved", "taken by another client"])
def test_after_a_capacity_change_overload_ends_within_seconds(
    stack: Callable[..., Stack], change: str
) -> None:
    """Capacity 400 -> 200 ev/s, or another client taking 200 of 400, with 300 arriving:
    from 5 s after the change our pushes are rarely refused."""
    s = stack()
    s.sim.call("/admin/capacity", {"rate": 400, "queue_limit": 200})
    s.rate = 300
    time.sleep(8)
    changed = time.time()
    other: Other | None = None
    if change == "halved":
        s.sim.call("/admin/capacity", {"rate": 200})
    else:
        other = Other(s.sim, 200)
        threading.Thread(target=other.run, daemon=True).start()
    try:
        time.sleep(15)
        seconds = timeline(s.sim, changed + 5)[:-1]
        assert overloaded_share(seconds, other) <= 0.05, seconds
    finally:
        if other is not None:
            other.stop.set()
            time.sleep(0.3)
    s.drained(60, already=other.accepted if other else 0)
