"""Shared benchmark plumbing: child processes, wrk runs, tables and JSON results."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis

from trackrelay.events import Event, shard_of
from trackrelay.queue.keys import EVENT_FIELD, Shard

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PLOTS = REPO / "benchmarks" / "plots"
"""PNG plots, kept in the repository (results/ holds JSON and is not), linked from
docs/benchmarks.md."""


def pyplot() -> Any | None:
    """matplotlib's pyplot drawing to files (Agg); None when matplotlib is not installed
    (the plots are extra: every figure is in the printed table and the JSON)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    return plt


def save_plot(plt: Any, fig: Any, path: Path) -> Path:
    """Lay ``fig`` out, write it to ``path`` (a PNG) and close it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)
    return path


def require(tool: str, package: str) -> str:
    path = shutil.which(tool)
    if path is None:
        sys.exit(f"benchmarks need '{tool}': apt-get install {package}")
    return path


def machine() -> dict[str, Any]:
    return {
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 60e3}


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text.strip())
    if not m:
        raise ValueError(f"unparsable wrk latency {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2)]


def wrk(
    url: str,
    body: str,
    seconds: float,
    connections: int,
    threads: int = 1,
    timeout: float = 10,
    delay_ms: float = 0.0,
) -> dict[str, float]:
    """POST ``body`` to ``url`` for ``seconds``; requests/s, ok/s, p50/p99 (ms), errors.

    ``delay_ms``: each connection waits this long before each request (a steady load
    of about ``connections / (delay + answer time)`` requests/s, not the service's limit)."""
    script = RESULTS / "post.lua"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(
        'wrk.method = "POST"\n'
        f"wrk.body = {json.dumps(body)}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        + (f"function delay() return {delay_ms:.1f} end\n" if delay_ms > 0 else "")
    )
    out = subprocess.run(
        [
            require("wrk", "wrk"),
            f"-t{threads}",
            f"-c{connections}",
            f"-d{int(seconds)}s",
            f"--timeout={timeout}s",
            "--latency",
            "-s",
            str(script),
            url,
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    total = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    duration = _ms(re.search(r"requests in ([\d.]+\w+),", out).group(1)) / 1e3  # type: ignore[union-attr]
    bad = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    timeouts = re.search(r"timeout (\d+)", out)
    non2xx = int(bad.group(1)) if bad else 0
    n_timeouts = int(timeouts.group(1)) if timeouts else 0
    p50 = re.search(r"^\s+50%\s+(\S+)", out, re.M)
    p99 = re.search(r"^\s+99%\s+(\S+)", out, re.M)
    ok = max(0, total - non2xx)
    return {
        "requests_per_s": round(total / duration, 1),
        "ok_per_s": round(ok / duration, 1),
        "p50_ms": round(_ms(p50.group(1)), 2) if p50 else float("nan"),
        "p99_ms": round(_ms(p99.group(1)), 2) if p99 else float("nan"),
        "failed_pct": round(100.0 * (non2xx + n_timeouts) / max(1, total + n_timeouts), 1),
    }


def http(url: str, body: dict[str, Any] | None = None, timeout: float = 30) -> Any:
    """GET ``url`` (POST ``body`` as JSON when given); the JSON answer."""
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return json.loads(r.read())


def table(title: str, columns: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in columns]] + [[_fmt(v) for v in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(columns))]
    lines = [title, "  ".join(c.ljust(w) for c, w in zip(cells[0], widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    lines += ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in cells[1:]]
    return "\n".join(lines)


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.1f}" if value >= 100 else f"{value:.2f}"
    return str(value)


def drained(events: int, seconds: float, **labels: Any) -> dict[str, Any]:
    """One row of a drain benchmark: its labels, the events moved, the seconds, events/s."""
    print(f"  {' '.join(map(str, labels.values()))}: {events} events in {seconds:.2f}s", flush=True)
    return {
        **labels,
        "events": events,
        "seconds": round(seconds, 2),
        "events_per_s": round(events / seconds),
    }


def write_json(name: str, data: dict[str, Any]) -> Path:
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"machine": machine(), **data}, indent=2))
    return path


def add_events(r: redis.Redis, count: int, tag: str, skus: int = 100, shards: int = 1) -> None:
    """XADD ``count`` one-unit events (ids ``{tag}{n}:0``) over ``skus`` SKUs, pipelined,
    each in its order's shard of a queue of ``shards``."""
    pipe = r.pipeline(transaction=False)
    for n in range(count):
        ev = Event(
            f"{tag}{n}:0", f"{tag}{n}", f"sku-{n % skus}", 1, 1.0, "2026-01-01T00:00:00.000Z"
        )
        stream = Shard(shard_of(ev.event_id, shards)).stream
        pipe.xadd(stream, {EVENT_FIELD: ev.to_json()})
        if n % 5000 == 4999:
            pipe.execute()
    pipe.execute()
