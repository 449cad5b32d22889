"""The controller at analytics' real capacity: the whole system, four strategies side by side.

Every run is the stack as users run it, ``trackrelay up`` (order API, relay,
forwarders, embedded Redis, SQLite, and the controller unless the strategy
turns it off), pointed at an analytics simulator in a process of its own that
the benchmark steers through its admin routes (an outage, a constant latency,
a capacity change, another client). A load generator posts orders of four
lines (four events; larger orders past 20 orders/s) to the order API at the
scenario's rate, and a backlog as a burst of 100-line orders. The runs go one
after the other, each with its own ports, data directory and Redis; the
strategies of one scenario run back to back.

Strategies:

- controller: ``trackrelay up`` as it is;
- no controller: ``up --no-control``, no budget (the forwarders' own windows);
- fixed budget at C: ``up --no-control``, the budget key set to the scenario's capacity;
- old law: ``up --no-control``, the budget set once a second by the law before
  issue 23 (``benchmarks/old_law.py``) from the forwarders' published views.

    .venv/bin/python benchmarks/control.py [--quick] [--scenarios drain,slow,...]
        [--strategies controller,none,fixed,old] [--forwarders N] [--keep] [--replot JSON]

Prints a table per scenario, every target of issue 23 marked met or MISSED, and a
summary; writes benchmarks/results/control.json and benchmarks/plots/control-<scenario>.png
(budget, delivered rate and backlog over time, a line per strategy). ``--quick``
writes control-quick.json and its plots to benchmarks/results/ instead.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import math
import os
import random
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx
from redis.exceptions import RedisError

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import old_law
from benchmarks.harness import PLOTS, RESULTS, pyplot, save_plot, table, write_json
from trackrelay.config.settings import ForwarderSettings
from trackrelay.control.controller import Spec
from trackrelay.control.percentile import percentile
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.loop.observe import observe
from trackrelay.queue import client as queue_client
from trackrelay.queue import rate_budget, shards, streams, views
from trackrelay.queue.client import Queue
from trackrelay.runtime.ports import free_port

ARRIVALS = 80.0
"""Events/s arriving, unless a scenario says otherwise."""
LINES = 4
"""Order lines (events) per order of the steady load."""
ORDERS_PER_S = 20.0
"""Above this many orders/s, the load sends larger orders (the same events/s in fewer)."""
BURST_LINES = 100
"""Order lines per order of a burst (the order API's largest order)."""
LANES = 16
"""Order requests the load generator keeps in flight at most."""
OVERHEAD = 0.001
"""Seconds of fixed work per request at analytics."""
QUEUE_SECONDS = 0.5
"""Analytics answers 429 past this many seconds of queued work."""
SAMPLE_EVERY = 0.5
DRAINED_AFTER = 5.0
"""A drain run stops this many seconds after its backlog is gone."""


@dataclass(frozen=True)
class Strategy:
    key: str
    name: str
    control: bool = False
    fixed_budget: bool = False
    old_law: bool = False


STRATEGIES = (
    Strategy("controller", "controller", control=True),
    Strategy("none", "no controller"),
    Strategy("fixed", "fixed budget at C", fixed_budget=True),
    Strategy("old", "old law", old_law=True),
)


@dataclass(frozen=True)
class Step:
    """What changes at ``at`` seconds into a scenario."""

    at: float
    fault: dict[str, Any] | None = None
    """The simulator's ``/admin/fault`` body."""
    capacity: dict[str, Any] | None = None
    """The simulator's ``/admin/capacity`` body."""
    arrivals: float | None = None
    """Events/s arriving from now on."""
    burst: int = 0
    """Events posted at once, as orders of ``BURST_LINES`` lines."""


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    capacity: float
    """C: analytics' events/s at the start."""
    seconds: float
    steps: tuple[Step, ...] = ()
    arrivals: float = ARRIVALS
    measure_from: float = 5.0
    """Seconds into the run the measuring interval starts (the drain: the outage's end)."""
    drain: bool = False
    """The interval ends when an ideal system would have drained the backlog; the run stops
    once its own backlog is gone."""


def _capacity(rate: float) -> dict[str, float]:
    return {"rate": rate, "queue_limit": QUEUE_SECONDS * rate}


def scenarios(scale: float = 1.0) -> list[Scenario]:
    """The five scenarios of issue 23; ``scale`` < 1 shortens them (and their backlogs)."""

    def s(seconds: float) -> float:
        return round(seconds * scale, 2)

    c = 500.0
    return [
        Scenario(
            "drain",
            f"drain after a {s(30):g} s outage, backlog {16 * scale:g} x C",
            c,
            s(80),
            (
                # While analytics is down the orders that arrive make a backlog of 16 x C.
                Step(s(5), fault={"mode": "down"}, arrivals=16 * c / 30),
                Step(s(35), fault={"mode": "healthy"}, arrivals=ARRIVALS),
            ),
            measure_from=s(35),
            drain=True,
        ),
        Scenario(
            "slow",
            "analytics at a constant 1 s per push, capacity ample (2000 ev/s)",
            2000.0,
            s(50),
            (Step(0.0, fault={"mode": "slow", "latency": 1.0}),),
            measure_from=s(5),
        ),
        Scenario("below", "capacity 60 ev/s below arrivals of 80", 60.0, s(50), measure_from=s(5)),
        Scenario(
            "halves",
            f"capacity halves from 400 to 200 ev/s at {s(25):g} s (backlog at start)",
            400.0,
            s(50),
            (Step(0.0, burst=int(13_000 * scale)), Step(s(25), capacity=_capacity(200))),
            measure_from=s(5),
        ),
        Scenario(
            "other",
            f"another client takes 200 of 400 ev/s from {s(15):g} s to {s(35):g} s "
            "(backlog at start)",
            400.0,
            s(50),
            (
                Step(0.0, burst=int(14_000 * scale)),
                Step(s(15), capacity={"other_client": 200}),
                Step(s(35), capacity={"other_client": 0}),
            ),
            measure_from=s(5),
        ),
    ]


def available(s: Scenario, t: float) -> float:
    """Events/s analytics can take from us at ``t`` seconds into ``s``."""
    rate, other, down = s.capacity, 0.0, False
    for step in s.steps:
        if step.at > t:
            continue
        if step.capacity is not None:
            rate = float(step.capacity.get("rate", rate))
            other = float(step.capacity.get("other_client", other))
        if step.fault is not None:
            down = step.fault.get("mode") == "down"
    return 0.0 if down else max(0.0, rate - other)


def outage(s: Scenario) -> tuple[float, float] | None:
    downs = [st.at for st in s.steps if st.fault and st.fault.get("mode") == "down"]
    ups = [st.at for st in s.steps if st.fault and st.fault.get("mode") == "healthy"]
    return (downs[0], ups[0]) if downs and ups else None


def changes(s: Scenario) -> list[float]:
    """When analytics' capacity changes (its return after an outage counts)."""
    out = [st.at for st in s.steps if st.capacity is not None and st.at > 0]
    down = outage(s)
    return sorted(out + ([down[1]] if down else []))


# -- the load ------------------------------------------------------------------------


class Load:
    """Orders posted to the order API at ``rate`` events/s (open loop, ``LANES`` in flight),
    and bursts; counts the events of every accepted order by the second it was accepted."""

    def __init__(self, api: str, rate: float, seed: int = 1) -> None:
        self.url = api + "/v1/orders"
        self.rate = rate
        self.rng = random.Random(seed)
        self.arrived: collections.Counter[int] = collections.Counter()
        self.total = 0
        self.refused = 0
        self._n = 0
        self._lanes = asyncio.Semaphore(LANES)
        self._tasks: set[asyncio.Task[None]] = set()

    def _order(self, lines: int) -> dict[str, Any]:
        self._n += 1
        skus = [f"sku-{self.rng.randint(1, 50):03d}" for _ in range(lines)]
        return {
            "customer_id": f"load-{self._n}",
            "items": [{"sku": sku, "qty": 1, "price": 100} for sku in skus],
        }

    async def _post(self, client: httpx.AsyncClient, lines: int) -> None:
        try:
            r = await client.post(self.url, json=self._order(lines))
            if r.status_code in (200, 201):
                self.arrived[int(time.time())] += lines
                self.total += lines
            else:
                self.refused += 1
        except httpx.HTTPError:
            self.refused += 1
        finally:
            self._lanes.release()

    async def _send(self, client: httpx.AsyncClient, lines: int) -> None:
        await self._lanes.acquire()
        task = asyncio.create_task(self._post(client, lines))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def run(self, client: httpx.AsyncClient, stop: asyncio.Event) -> None:
        loop = asyncio.get_running_loop()
        next_at = loop.time()
        while not stop.is_set():
            lines = min(BURST_LINES, max(LINES, math.ceil(self.rate / ORDERS_PER_S)))
            await self._send(client, lines)
            next_at += lines / max(self.rate, 0.1)
            delay = next_at - loop.time()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=delay)
            else:
                next_at = loop.time()  # behind: do not burst to catch up
        await self.settle()

    async def burst(self, client: httpx.AsyncClient, events: int) -> None:
        while events > 0:
            lines = min(BURST_LINES, events)
            await self._send(client, lines)
            events -= lines

    async def settle(self) -> None:
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


# -- one run -------------------------------------------------------------------------


@dataclass
class Run:
    scenario: Scenario
    strategy: Strategy
    workdir: Path
    t0: float = 0.0
    t0_wall: float = 0.0
    elapsed: float = 0.0
    drained_at: float | None = None
    """Seconds into the run the backlog was gone (a drain run)."""
    samples: list[dict[str, Any]] = field(default_factory=list)
    reasons: list[dict[str, Any]] = field(default_factory=list)
    arrived: dict[int, int] = field(default_factory=dict)
    refused: int = 0
    timeline: list[dict[str, Any]] = field(default_factory=list)
    state: dict[str, Any] = field(default_factory=dict)
    overhead: list[float] = field(default_factory=list)
    """Seconds to start the stack and to stop it."""
    load_average: list[float] = field(default_factory=list)
    """The machine's 1-minute load average as the run started and as it ended."""


class Stack:
    """The simulator and ``trackrelay up`` of one run, started and stopped."""

    def __init__(self, run: Run, forwarders: int | None) -> None:
        self.run = run
        self.forwarders = forwarders
        self.procs: list[Any] = []
        self.sim = ""
        self.api = ""
        self.data = run.workdir / "up"
        self.redis: Queue | None = None

    def start(self) -> None:
        s, st = self.run.scenario, self.run.strategy
        work = self.run.workdir
        port = free_port()
        sim = spawn_role(
            [
                "analytics-sim",
                "--port",
                str(port),
                "--rate",
                f"{s.capacity:g}",
                "--overhead",
                f"{OVERHEAD:g}",
                "--queue-limit",
                f"{QUEUE_SECONDS * s.capacity:g}",
            ],
            {},
            work / "sim.log",
        )
        self.procs.append(sim)
        self.sim = f"http://127.0.0.1:{port}"
        api_port = free_port()
        self.api = f"http://127.0.0.1:{api_port}"
        args = ["up", "--analytics-url", self.sim, "--data-dir", str(self.data)]
        args += ["--port", str(api_port)]
        if not st.control:
            args.append("--no-control")
            if self.forwarders is not None:
                args += ["--forwarders", str(self.forwarders)]
        up = spawn_role(args, {}, work / "up.log")  # both start at once: up needs no analytics
        self.procs.append(up)
        wait_http(self.sim + "/healthz", 30, sim)
        wait_http(self.api + "/readyz", 90, up)

    async def connect(self) -> Queue:
        """Redis from ``up``'s status file, once a forwarder has published its view."""
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = read_status(self.data)
            if status.get("queue") and self.redis is None:
                self.redis = queue_client.connect(str(status["queue"]), timeout=2)
            if self.redis is not None and await views.read_stats(self.redis):
                return self.redis
            await asyncio.sleep(0.2)
        raise RuntimeError(f"no forwarder published its view within 60 s; see {self.data}/logs")

    async def stop(self) -> None:
        if self.redis is not None:
            await self.redis.aclose()
        # up first (it stops its forwarders, relay and Redis), then the simulator
        for proc in reversed(self.procs):
            await asyncio.to_thread(stop_all, [proc], 30.0)


def read_status(data_dir: Path) -> dict[str, Any]:
    try:
        data: dict[str, Any] = json.loads((data_dir / "status.json").read_text())
    except (FileNotFoundError, ValueError):
        return {}
    return data


async def sim_post(client: httpx.AsyncClient, url: str, body: dict[str, Any]) -> None:
    r = await client.post(url, json=body)
    r.raise_for_status()


async def old_law_loop(redis: Queue, stop: asyncio.Event, reasons: list[dict[str, Any]]) -> None:
    """The law before issue 23 as its own control loop: observe, decide, set the budget."""
    spec = old_law.OldSpec()
    budget = spec.budget_initial
    await rate_budget.set_budget(redis, budget)
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=spec.interval)
        if stop.is_set():
            break
        try:
            seen = old_law.seen(await observe(redis, None))
        except (RedisError, OSError):
            continue  # the old loop held its decision too
        budget, why = old_law.budget(spec, budget, seen)
        await rate_budget.set_budget(redis, budget)
        if why is not None:
            reasons.append({"at": time.time(), "kind": "old-law", "text": why})


async def sample(run: Run, stack: Stack, load: Load, client: httpx.AsyncClient) -> None:
    assert stack.redis is not None
    r = stack.redis
    state = (await client.get(stack.sim + "/admin/state")).json()
    stats = await streams.queue_stats(r, await shards.current(r))
    published = await views.read_stats(r)
    status = read_status(stack.data)
    decision = status.get("decision") or {}
    seen = {(x["at"], x["text"]) for x in run.reasons}
    for reason in status.get("reasons") or []:
        if isinstance(reason, dict) and (reason.get("at"), reason.get("text")) not in seen:
            run.reasons.append(reason)
    run.samples.append(
        {
            "t": round(time.monotonic() - run.t0, 2),
            "wall": time.time(),
            "accepted": int(state["accepted"]),
            "arrived": load.total,
            "budget": await rate_budget.get_budget(r),
            "stream": stats.length,
            "pending": stats.pending,
            "forwarders": len(published),
            "fleet_rate": sum(
                float((v.get("recent") or {}).get("events_per_second") or 0.0)
                for v in published.values()
            ),
            "limit": sum(float(v.get("limit_events") or 0.0) for v in published.values()),
            "push_size": max((int(v.get("push_size") or 0) for v in published.values()), default=0),
            "in_flight": sum(int(v.get("in_flight_events") or 0) for v in published.values()),
            "breakers": sorted({str(v.get("breaker")) for v in published.values()}),
            "decided_replicas": decision.get("replicas"),
            "other_client": state.get("other_client"),
        }
    )


async def run_one(
    s: Scenario, st: Strategy, base: Path, forwarders: int | None, log: Callable[[str], None]
) -> Run:
    run = Run(s, st, Path(tempfile.mkdtemp(prefix=f"{s.key}-{st.key}-", dir=base)))
    stack = Stack(run, forwarders)
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    began = time.monotonic()
    async with httpx.AsyncClient(timeout=10) as client:
        try:
            await asyncio.to_thread(stack.start)
            redis = await stack.connect()
            for _ in range(3):  # a fresh process answers its first requests slowly
                await sim_post(client, stack.sim + "/v1/track", {"events": []})
            await sim_post(client, stack.sim + "/admin/reset", {})
            if st.fixed_budget:
                await rate_budget.set_budget(redis, s.capacity)
            load = Load(stack.api, s.arrivals)
            run.t0, run.t0_wall = time.monotonic(), time.time()
            run.overhead.append(run.t0 - began)
            run.load_average.append(os.getloadavg()[0])
            tasks.append(asyncio.create_task(load.run(client, stop)))
            if st.old_law:
                tasks.append(asyncio.create_task(old_law_loop(redis, stop, run.reasons)))
            pending = sorted(s.steps, key=lambda x: x.at)
            down = outage(s)
            while True:
                t = time.monotonic() - run.t0
                while pending and pending[0].at <= t:
                    step = pending.pop(0)
                    if step.fault is not None:
                        await sim_post(client, stack.sim + "/admin/fault", step.fault)
                    if step.capacity is not None:
                        await sim_post(client, stack.sim + "/admin/capacity", step.capacity)
                    if step.arrivals is not None:
                        load.rate = step.arrivals
                    if step.burst:
                        tasks.append(asyncio.create_task(load.burst(client, step.burst)))
                await sample(run, stack, load, client)
                last = run.samples[-1]
                waiting = last["arrived"] - last["accepted"]
                after_outage = s.drain and down is not None and t >= down[1]
                if after_outage and run.drained_at is None and waiting <= max(50.0, s.arrivals):
                    run.drained_at = t
                done = run.drained_at is not None and t >= run.drained_at + DRAINED_AFTER
                if t >= s.seconds or done:
                    break
                await asyncio.sleep(max(0.0, SAMPLE_EVERY - (time.monotonic() - run.t0 - t)))
            run.elapsed = time.monotonic() - run.t0
            run.load_average.append(os.getloadavg()[0])
            stop.set()
            await asyncio.gather(*tasks)
            await load.settle()
            await asyncio.sleep(1.0)  # the pushes in flight land
            since = run.t0_wall - 1
            got = await client.get(f"{stack.sim}/admin/timeline?since={since}&raw=true")
            run.timeline = got.json()["seconds"]
            run.state = (await client.get(stack.sim + "/admin/state")).json()
            run.arrived = dict(load.arrived)
            run.refused = load.refused
        except BaseException:
            for name in ("up.log", "sim.log"):
                path = run.workdir / name
                if path.exists():
                    tail = "\n".join(path.read_text().splitlines()[-30:])
                    log(f"--- {path} (last lines)\n{tail}")
            raise
        finally:
            stop.set()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            stopping = time.monotonic()
            await stack.stop()
            run.overhead.append(time.monotonic() - stopping)
    return run


# -- figures -------------------------------------------------------------------------


def floor_of(st: Strategy) -> float | None:
    """The budget's floor of a strategy that moves the budget (None: it does not)."""
    if st.control:
        floor: float = Spec().budget_min
        return floor
    if st.old_law:
        return old_law.OldSpec().budget_min
    return None


def figures(run: Run) -> dict[str, Any]:
    s, st = run.scenario, run.strategy
    t0 = run.t0_wall
    secs = {int(x["t"]): x for x in run.timeline}
    first, last = int(t0), int(t0 + run.elapsed)  # whole seconds [first, last)
    down = outage(s)
    push_timeout = ForwarderSettings().push_timeout

    def rel(w: int) -> float:
        return w - t0

    def in_outage(w: int) -> bool:
        return down is not None and down[0] - 1 <= rel(w) <= down[1] + 1

    def cap(w: int) -> float:
        return sum(available(s, rel(w) + i / 10) for i in range(10)) / 10

    # The ideal: a system that delivers at once whatever analytics can take, from the
    # backlog this run had when the interval began and the arrivals it saw.
    start = max(first, math.ceil(t0 + s.measure_from))
    backlog = float(
        sum(n for w, n in run.arrived.items() if w < start)
        - sum(x["accepted"] for w, x in secs.items() if w < start)
    )
    backlog = start_backlog = max(0.0, backlog)
    got = ideal = bound = 0.0
    seconds = 0
    for w in range(start, last):
        c = cap(w)
        arrived = run.arrived.get(w, 0)
        take = min(c, backlog + arrived)
        backlog += arrived - take
        got += secs.get(w, {}).get("accepted", 0)
        ideal += take
        seconds += 1
        bound += take >= c - 1e-9 and c > 0
        if s.drain and backlog <= 0:
            break
    capacity_bound = seconds > 0 and bound >= seconds / 2
    requests = overload = late = 0
    lat: list[float] = []
    idle: list[float] = []
    for w in range(first, last + 2):
        x = secs.get(w)
        if x is None or in_outage(w):
            continue
        requests += sum(x["statuses"].values())
        overload += x["statuses"].get("429", 0) + x["statuses"].get("503", 0)
        for took, alone in x.get("served", []):
            lat.append(took)
            idle.append(alone)
            late += took > push_timeout
    after: list[dict[str, Any]] = []
    for ct in changes(s):
        # After an outage the window starts with the first whole second of a healthy analytics
        # (the second it returns in still holds the outage's 503s); after a capacity change it
        # starts with the second of the change.
        begin = math.ceil(t0 + ct) if down is not None and ct == down[1] else int(t0 + ct)
        window = [secs[w] for w in range(begin, begin + 5) if w in secs]
        n = sum(sum(x["statuses"].values()) for x in window)
        bad = sum(x["statuses"].get("429", 0) + x["statuses"].get("503", 0) for x in window)
        after.append({"at": ct, "requests": n, "overload": bad, "share": bad / n if n else 0.0})
    floor = floor_of(st)
    floor_seconds: int | None = None
    if floor is not None:
        healthy_at_floor = set()
        for smp in run.samples:
            b = smp["budget"]
            w = int(smp["wall"])
            x = secs.get(w)
            if b is None or b > floor * 1.0001 or x is None or in_outage(w):
                continue
            n = sum(x["statuses"].values())
            ok = n > 0 and x["statuses"].get("200", 0) == n and (x["max"] or 0) < push_timeout
            if ok:
                healthy_at_floor.add(w)
        floor_seconds = len(healthy_at_floor)
    p99, idle_p99 = percentile(lat, 0.99), percentile(idle, 0.99)
    budgets = [smp["budget"] for smp in run.samples if smp["budget"] is not None]
    fleet = [smp["forwarders"] for smp in run.samples]
    out: dict[str, Any] = {
        "strategy": st.name,
        "goodput": got / ideal if ideal else None,
        "of": ("C" if s.key != "other" else "C left to us") if capacity_bound else "arrivals",
        "delivered_per_s": got / seconds if seconds else None,
        "ideal_per_s": ideal / seconds if seconds else None,
        "interval": [start - t0, start - t0 + seconds],
        "backlog_at_start": start_backlog,
        "overload_share": overload / requests if requests else 0.0,
        "requests": requests,
        "answered_after_push_timeout": late,
        "overload_after_change": max((a["share"] for a in after), default=None),
        "after_changes": after,
        "floor_seconds": floor_seconds,
        "budget_floor": floor,
        "p99_seconds": p99,
        "idle_p99_seconds": idle_p99,
        "p99_over_idle": p99 / idle_p99 if p99 is not None and idle_p99 else None,
        "budget_range": [min(budgets), max(budgets)] if budgets else None,
        "forwarders_range": [min(fleet), max(fleet)] if fleet else None,
        "accepted": run.state.get("accepted"),
        "duplicates": run.state.get("duplicates"),
        "arrived": sum(run.arrived.values()),
        "orders_refused": run.refused,
        "seconds": round(run.elapsed, 1),
        "started_at": run.t0_wall,
        "load_average": run.load_average,
    }
    if down is not None:
        out["to_09c_seconds"] = to_share(run, down[1], 0.9 * s.capacity)
        out["drain_seconds"] = None if run.drained_at is None else run.drained_at - down[1]
    if run.state.get("other_client"):
        oc = run.state["other_client"]
        total = oc["served"] + oc["refused"]
        out["other_client_refused_share"] = oc["refused"] / total if total else 0.0
    return out


def to_share(run: Run, since: float, rate: float) -> float | None:
    """Seconds after ``since`` until analytics first took ``rate`` events/s over a second."""
    samples = run.samples
    for i, smp in enumerate(samples):
        if smp["t"] < since + 1.0:
            continue
        j = max(k for k in range(i + 1) if samples[k]["t"] <= smp["t"] - 1.0)
        span = smp["t"] - samples[j]["t"]
        if span > 0 and (smp["accepted"] - samples[j]["accepted"]) / span >= rate:
            return round(float(smp["t"]) - since, 1)
    return None


@dataclass(frozen=True)
class Target:
    key: str
    text: str
    met: Callable[[float], bool]
    scenarios: tuple[str, ...] = ()
    """Only these scenarios (empty: every one)."""


TARGETS = (
    Target("goodput", "goodput >= 0.95 of C (bottleneck) or of arrivals", lambda v: v >= 0.95),
    Target("overload_share", "429/503 <= 1% of requests", lambda v: v <= 0.01),
    Target("to_09c_seconds", "0.9 C within 5 s after the outage", lambda v: v <= 5, ("drain",)),
    Target(
        "overload_after_change",
        "overload <= 1% within 5 s after a capacity change",
        lambda v: v <= 0.01,
    ),
    Target(
        "floor_seconds",
        "budget never at its floor while analytics answers 2xx in time, no 429",
        lambda v: v == 0,
    ),
    Target("p99_over_idle", "analytics p99 <= 1.5x its idle response time", lambda v: v <= 1.5),
)


def verdicts(scenario: str, fig: dict[str, Any]) -> dict[str, bool | None]:
    """Each target's verdict: met, missed, or None where it does not apply."""
    out: dict[str, bool | None] = {}
    for t in TARGETS:
        if t.scenarios and scenario not in t.scenarios:
            continue
        if t.key not in fig:
            continue
        value = fig[t.key]
        if t.key == "floor_seconds" and value is None:
            out[t.key] = None  # no budget law: nothing to judge
        elif t.key == "overload_after_change" and value is None:
            continue  # no capacity change in this scenario
        else:
            out[t.key] = value is not None and t.met(value)
    return out


def cell(value: Any, verdict: bool | None, fmt: str = "{:.2f}") -> str:
    if verdict is None and value is None:
        return "-"
    text = "never" if value is None else fmt.format(value)
    if verdict is None:
        return text
    return f"{text} {'met' if verdict else 'MISSED'}"


COLUMNS = [
    "strategy",
    "goodput",
    "of",
    "ev/s (ideal)",
    "429/503",
    "0.9C after s",
    "overload 5 s after change",
    "floor s",
    "p99/idle",
    "forwarders",
]


def row(fig: dict[str, Any], v: dict[str, bool | None]) -> list[Any]:
    rate = fig["delivered_per_s"]
    ideal = fig["ideal_per_s"]
    fleet = fig["forwarders_range"]
    return [
        fig["strategy"],
        cell(fig["goodput"], v.get("goodput")),
        fig["of"],
        "-" if rate is None else f"{rate:.0f} ({ideal:.0f})",
        cell(fig["overload_share"], v.get("overload_share"), "{:.1%}"),
        cell(fig.get("to_09c_seconds"), v.get("to_09c_seconds"), "{:.1f}")
        if "to_09c_seconds" in v
        else "-",
        cell(fig["overload_after_change"], v.get("overload_after_change"), "{:.1%}")
        if "overload_after_change" in v
        else "-",
        cell(fig["floor_seconds"], v.get("floor_seconds"), "{}"),
        cell(fig["p99_over_idle"], v.get("p99_over_idle")),
        "-" if not fleet else f"{fleet[0]}-{fleet[1]}" if fleet[0] != fleet[1] else str(fleet[0]),
    ]


# -- plots ---------------------------------------------------------------------------


def plot(s: Scenario, runs: list[Run], where: Path, prefix: str) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, axes = plt.subplots(3, 1, figsize=(10, 10), sharex=True)
    span = max((r.elapsed for r in runs), default=s.seconds)
    ts = [i / 10 for i in range(int(span * 10) + 1)]
    axes[1].plot(ts, [available(s, t) for t in ts], "k--", linewidth=1, label="analytics takes")
    if runs:  # every run gets about the same arrivals; the first one's stand for them all
        first = runs[0]
        whole = range(int(first.t0_wall), int(first.t0_wall + first.elapsed))
        axes[1].plot(
            [w - first.t0_wall + 0.5 for w in whole],
            [first.arrived.get(w, 0) for w in whole],
            ":",
            color="grey",
            label="arrivals",
        )
    for run in runs:
        label = run.strategy.name
        color = f"C{[st.key for st in STRATEGIES].index(run.strategy.key)}"
        budget = [(x["t"], x["budget"]) for x in run.samples if x["budget"] is not None]
        if budget:
            axes[0].step(
                [a for a, _ in budget],
                [b for _, b in budget],
                where="post",
                label=label,
                color=color,
            )
        else:
            axes[0].plot([], [], label=f"{label} (no budget)", color=color)
        secs = {int(x["t"]): x["accepted"] for x in run.timeline}
        whole = range(int(run.t0_wall), int(run.t0_wall + run.elapsed))
        axes[1].plot(
            [w - run.t0_wall + 0.5 for w in whole], [secs.get(w, 0) for w in whole], color=color
        )
        axes[2].plot(
            [x["t"] for x in run.samples],
            [x["arrived"] - x["accepted"] for x in run.samples],
            color=color,
        )
    axes[0].set_yscale("log")
    axes[0].set_ylabel("budget (events/s)")
    axes[0].legend(fontsize=8, loc="lower right")
    # A burst's arrivals run off the top, and so does an ample capacity (10 x the arrivals).
    ample = s.capacity >= 10 * s.arrivals
    busiest = max(
        [
            s.arrivals,
            0.0 if ample else s.capacity,
            *(x["accepted"] for r in runs for x in r.timeline),
        ]
    )
    axes[1].set_ylim(0, 1.3 * busiest)
    axes[1].set_ylabel("accepted by analytics (events/s)")
    axes[1].legend(fontsize=8, loc="upper right")
    axes[2].set_ylabel("backlog (events arrived, not accepted)")
    axes[2].set_xlabel("seconds")
    axes[0].set_title(f"{s.title}; arrivals {s.arrivals:g} ev/s")
    return save_plot(plt, fig, where / f"{prefix}-{s.key}.png")


# -- main ----------------------------------------------------------------------------


def slim(x: dict[str, Any]) -> dict[str, Any]:
    """A timeline second without its raw response times (they make the JSON huge)."""
    return {k: v for k, v in x.items() if k not in ("latencies", "served")}


def choose(text: str | None, keys: list[str], what: str) -> list[str]:
    if not text:
        return keys
    chosen = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in chosen if k not in keys]
    if unknown:
        sys.exit(f"unknown {what} {unknown}: choose from {keys}")
    return chosen


def replot(path: Path) -> None:
    """The plots of an earlier run, from its JSON (into benchmarks/plots/, or results/ for a
    quick run)."""
    data = json.loads(path.read_text())
    by_name = {st.name: st for st in STRATEGIES}
    prefix = path.stem
    where = RESULTS if data.get("quick") else PLOTS
    for entry in data["scenarios"].values():
        d = entry["definition"]
        steps = tuple(Step(**x) for x in d.pop("steps"))
        s = Scenario(**d, steps=steps)
        runs = []
        for r in entry["runs"]:
            f = r["figures"]
            first = r["samples"][0]
            run = Run(s, by_name[f["strategy"]], path.parent)
            run.t0_wall = f.get("started_at", first["wall"] - first["t"])
            run.elapsed = f["seconds"]
            run.samples, run.timeline = r["samples"], r["timeline"]
            run.arrived = {int(k): v for k, v in r["arrived"].items()}
            runs.append(run)
        png = plot(s, runs, where, prefix)
        print(png)


async def main_async(args: argparse.Namespace) -> None:
    scale = 0.2 if args.quick else 1.0
    every = {s.key: s for s in scenarios(scale)}
    by_key = {st.key: st for st in STRATEGIES}
    chosen = choose(args.scenarios, list(every), "scenarios")
    strategies = [by_key[k] for k in choose(args.strategies, list(by_key), "strategies")]
    name = "control-quick" if args.quick else "control"
    plots = RESULTS if args.quick else PLOTS
    out: dict[str, Any] = {
        "arrivals": ARRIVALS,
        "lines_per_order": LINES,
        "overhead": OVERHEAD,
        "queue_seconds": QUEUE_SECONDS,
        "quick": args.quick,
        "forwarders_without_controller": args.forwarders,
        "targets": {t.key: t.text for t in TARGETS},
        "scenarios": {},
    }
    started = time.monotonic()
    summary: dict[str, dict[str, str]] = {st.name: {} for st in strategies}
    base = Path(tempfile.mkdtemp(prefix="trackrelay-control-"))
    try:
        for key in chosen:
            s = every[key]
            print(f"-- {s.title}: {len(strategies)} runs of up to {s.seconds:g} s", flush=True)
            runs = []
            for st in strategies:
                run = await run_one(s, st, base, args.forwarders, print)
                runs.append(run)
                up, down = [*run.overhead, 0.0, 0.0][:2]
                print(
                    f"   {st.name}: {run.elapsed:.0f} s (start {up:.0f} s, stop {down:.0f} s)",
                    flush=True,
                )
            figs = [figures(r) for r in runs]
            marks = [verdicts(s.key, f) for f in figs]
            print(table(s.title, COLUMNS, [row(f, v) for f, v in zip(figs, marks, strict=True)]))
            print(flush=True)
            png = plot(s, runs, plots, name)
            for f, v in zip(figs, marks, strict=True):
                judged = [m for m in v.values() if m is not None]
                summary[f["strategy"]][s.key] = f"{sum(judged)}/{len(judged)}"
            out["scenarios"][s.key] = {
                "definition": asdict(s),
                "plot": png.name if png else None,
                "runs": [
                    {
                        "figures": f,
                        "targets": v,
                        "samples": r.samples,
                        "reasons": r.reasons,
                        "arrived": r.arrived,
                        "timeline": [slim(x) for x in r.timeline],
                    }
                    for f, v, r in zip(figs, marks, runs, strict=True)
                ],
            }
    finally:
        if args.keep:
            print(f"work directories kept in {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    print(
        table(
            "targets met, by strategy and scenario",
            ["strategy", *chosen],
            [[st.name, *[summary[st.name].get(k, "-") for k in chosen]] for st in strategies],
        )
    )
    out["seconds"] = time.monotonic() - started
    path = write_json(name, out)
    print(f"\n{out['seconds']:.0f} s; results in {path}, plots in {plots}/{name}-*.png")


def main() -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="scenarios at a fifth of their length")
    ap.add_argument("--scenarios", help="comma-separated: drain,slow,below,halves,other")
    ap.add_argument("--strategies", help="comma-separated: controller,none,fixed,old")
    ap.add_argument(
        "--forwarders",
        type=int,
        help="forwarders of the strategies without controller (default: what up starts)",
    )
    ap.add_argument("--keep", action="store_true", help="keep each run's data and logs")
    ap.add_argument("--replot", type=Path, help="only redraw the plots of this results JSON")
    args = ap.parse_args()
    if args.replot is not None:
        replot(args.replot)
        return
    asyncio.run(main_async(args))


if __name__ == "__main__":
    main()
