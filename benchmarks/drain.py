"""The long drain: an analytics outage's backlog at the queue quota, then recovery.

An hour's outage compressed: 2 million events are written into the stream while
analytics is down (``--events``), and ``trackrelay up`` runs on that Redis with
its quota set to what the backlog uses. After a quiet spell (the outage's steady
state: forwarders backing off, nothing delivered) analytics comes back with
``--capacity`` events/s, and the controller, the forwarders and the relay drain
the backlog. Every second the benchmark samples each process's RSS (``up`` and
every child it started, the queue's Redis, the simulator) and the stream's length.

Targets: every trackrelay process's RSS within 1.2 times its RSS during the outage
(its idle RSS: the median of the quiet spell) through the whole drain, and the
drain at 0.95 or more of analytics' capacity (events the simulator counted per
second, the ramp from the controller's first budget left out and shown apart).

    .venv/bin/python benchmarks/drain.py [--events 2000000] [--capacity 8000]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import redis

from benchmarks.harness import (
    PLOTS,
    add_events,
    http,
    pyplot,
    save_plot,
    table,
    write_json,
)
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.queue.keys import STREAM
from trackrelay.runtime.ports import free_port

QUIET = 15.0
"""Seconds of outage with ``up`` running before analytics returns (the idle RSS)."""
RSS_LIMIT = 1.2
RATE_TARGET = 0.95
RAMP = 15.0
"""Seconds after recovery left out of the steady drain rate (the budget's climb)."""


def rss_kib(pid: int) -> int | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return None
    return None


def command(pid: int) -> str:
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except FileNotFoundError:
        return "?"
    words = [a.decode(errors="replace") for a in argv if a]
    for role in ("forward", "relay", "up", "analytics-sim", "redis-server"):
        if any(w == role or w.startswith(role) or w.endswith(role) for w in words):
            return "forwarder" if role == "forward" else role
    return Path(words[0]).name if words else "?"


def children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def descendants(pid: int) -> list[int]:
    found, todo = [], [pid]
    while todo:
        kids = children(todo.pop())
        found += kids
        todo += kids
    return found


def sample(up_pid: int, fixed: dict[str, int], r: redis.Redis, started: float) -> dict[str, Any]:
    processes = {f"up[{up_pid}]": up_pid}
    for pid in descendants(up_pid):
        processes[f"{command(pid)}[{pid}]"] = pid
    for name, pid in fixed.items():
        processes[f"{name}[{pid}]"] = pid
    rss = {name: rss_kib(pid) for name, pid in processes.items()}
    return {
        "t": round(time.time() - started, 1),
        "stream": int(r.xlen(STREAM)),
        "rss_kib": {k: v for k, v in rss.items() if v is not None},
    }


def run(events: int, capacity: float, work: Path) -> dict[str, Any]:
    server = EmbeddedRedis(work / "redis").start()  # AOF, appendfsync always: as `up`'s own
    r = redis.Redis.from_url(server.url)
    sim_port, api_port = free_port(), free_port()
    sim_url = f"http://127.0.0.1:{sim_port}"
    sim = spawn_role(
        ["analytics-sim", "--port", str(sim_port), "--rate", f"{capacity:g}"],
        {},
        work / "sim.log",
    )
    up = None
    try:
        wait_http(sim_url + "/healthz", 30, sim)
        http(f"{sim_url}/admin/fault", {"mode": "down"})
        print(f"  filling the stream with {events:,} events (the outage's backlog)", flush=True)
        filled = time.perf_counter()
        add_events(r, events, "d")
        used = int(r.info("memory")["used_memory"])
        print(
            f"  {events:,} events in {time.perf_counter() - filled:.0f} s; "
            f"Redis uses {used / 2**20:.0f} MiB",
            flush=True,
        )
        quota = int(used * 1.02)
        args = ["up", "--redis-url", server.url, "--analytics-url", sim_url]
        args += ["--data-dir", str(work / "up"), "--port", str(api_port)]
        args += ["--queue-quota", str(quota), "--budget-max", f"{2 * capacity:g}"]
        up = spawn_role(args, {}, work / "up.log")
        wait_http(f"http://127.0.0.1:{api_port}/readyz", 90, up)
        assert server.process is not None
        fixed = {"redis-server": server.process.pid, "analytics-sim": sim.pid}
        started = time.time()
        samples = []
        while time.time() - started < QUIET:
            samples.append(sample(up.pid, fixed, r, started))
            time.sleep(1.0)
        recovered = time.time()
        http(f"{sim_url}/admin/fault", {"mode": "healthy"})
        print(f"  analytics back at {capacity:g} events/s; draining", flush=True)
        while True:
            samples.append(sample(up.pid, fixed, r, started))
            if samples[-1]["stream"] == 0:
                break
            if time.time() - recovered > 20 * events / capacity:
                raise SystemExit("the backlog did not drain in 20 times the least it takes")
            time.sleep(1.0)
        drained = time.time()
        timeline = http(f"{sim_url}/admin/timeline?since={int(recovered)}")["seconds"]
        state = http(f"{sim_url}/admin/state")
    finally:
        if up is not None:
            stop_all([up], 30.0)
        stop_all([sim], 10.0)
        r.close()
        server.stop()
    return {
        "events": events,
        "capacity": capacity,
        "quota": quota,
        "quiet_s": QUIET,
        "recovered_t": round(recovered - started, 1),
        "drain_s": round(drained - recovered, 1),
        "accepted": state["accepted"],
        "duplicates": state["duplicates"],
        "timeline": timeline,
        "samples": samples,
    }


def verdict(result: dict[str, Any]) -> tuple[list[list[Any]], dict[str, Any]]:
    quiet = [s for s in result["samples"] if s["t"] < result["recovered_t"]]
    drain = [s for s in result["samples"] if s["t"] >= result["recovered_t"]]
    rows = []
    worst = 0.0

    def role(name: str) -> str:
        return name.split("[")[0]

    idle_of_role: dict[str, list[int]] = {}
    for s in quiet:
        for name, kib in s["rss_kib"].items():
            idle_of_role.setdefault(role(name), []).append(kib)
    for name in sorted({n for s in result["samples"] for n in s["rss_kib"]}):
        idle = [s["rss_kib"][name] for s in quiet if name in s["rss_kib"]]
        during = [s["rss_kib"][name] for s in drain if name in s["rss_kib"]]
        if not idle:
            # a forwarder the controller added: against the idle RSS of its role
            idle = idle_of_role.get(role(name), [])
        if not idle or not during:
            continue
        base = statistics.median(idle)
        ratio = max(during) / base
        ours = not name.startswith(("redis-server", "analytics-sim"))
        if ours:
            worst = max(worst, ratio)
        rows.append([name, round(base / 1024, 1), round(max(during) / 1024, 1), round(ratio, 2)])
    recovered = result["recovered_t"]
    per_second = [s["accepted"] for s in result["timeline"]]
    steady = per_second[int(RAMP) : -2] if len(per_second) > RAMP + 2 else per_second
    summary = {
        "drain_s": result["drain_s"],
        "overall_per_s": round(result["events"] / result["drain_s"]),
        "overall_share": round(result["events"] / result["drain_s"] / result["capacity"], 3),
        "steady_per_s": round(statistics.mean(steady)) if steady else None,
        "steady_share": round(statistics.mean(steady) / result["capacity"], 3) if steady else None,
        "worst_rss_ratio": round(worst, 2),
        "lost": result["events"] - result["accepted"],
        "duplicates": result["duplicates"],
        "recovered_t": recovered,
    }
    return rows, summary


def plot(result: dict[str, Any]) -> Path | None:
    plt = pyplot()
    if plt is None:
        return None
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(10, 7), sharex=True)
    names = sorted({n for s in result["samples"] for n in s["rss_kib"]})
    for name in names:
        points = [
            (s["t"], s["rss_kib"][name] / 1024) for s in result["samples"] if name in s["rss_kib"]
        ]
        top.plot([p[0] for p in points], [p[1] for p in points], label=name)
    top.set_ylabel("RSS (MiB)")
    top.set_yscale("log")
    top.legend(fontsize=7, loc="upper right")
    bottom.plot([s["t"] for s in result["samples"]], [s["stream"] for s in result["samples"]])
    bottom.set_ylabel("stream entries")
    bottom.set_xlabel("seconds since up started (analytics back at the dashed line)")
    for ax in (top, bottom):
        ax.axvline(result["recovered_t"], color="black", linestyle="--", linewidth=1)
    top.set_title(
        f"Draining {result['events']:,} events at {result['capacity']:g} events/s", fontsize=9
    )
    return save_plot(plt, fig, PLOTS / "drain-rss.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=2_000_000)
    parser.add_argument("--capacity", type=float, default=8000.0, help="analytics' events/s")
    parser.add_argument("--keep", type=Path, help="work in this directory and keep its logs")
    args = parser.parse_args()
    if args.keep is not None:
        args.keep.mkdir(parents=True)
        result = run(args.events, args.capacity, args.keep)
    else:
        with tempfile.TemporaryDirectory(prefix="trackrelay-drain-") as tmp:
            result = run(args.events, args.capacity, Path(tmp))
    rows, summary = verdict(result)
    print()
    print(
        table(
            "RSS: outage (idle) and the drain's peak",
            ["process", "idle MiB", "peak MiB", "peak/idle"],
            rows,
        )
    )
    print()
    print(table("the drain", list(summary), [list(summary.values())]))
    print(
        f"\ntargets: peak/idle <= {RSS_LIMIT} for trackrelay's processes,"
        + f" steady share >= {RATE_TARGET}"
    )
    plotted = plot(result)
    if plotted is not None:
        print(f"plot: {plotted}")
    result["timeline"] = [{"t": s["t"], "accepted": s["accepted"]} for s in result["timeline"]]
    print(f"results: {write_json('drain', {'summary': summary, 'rss': rows, **result})}")


if __name__ == "__main__":
    main()
