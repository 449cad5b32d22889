"""``trackrelay up`` against any server that speaks the push contract."""

from __future__ import annotations

import json
import re
import signal
import socket
import time
import urllib.request
from pathlib import Path
from typing import Any

from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.runtime.ports import free_port


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as r:
        return json.loads(r.read())


def _post_order(base: str, n: int, unique: bool = False) -> int:
    skus = (f"u{n}-a", f"u{n}-b") if unique else (f"sku-{n % 3}", "gift")
    body = {
        "customer_id": f"c{n}",
        "items": [
            {"sku": skus[0], "qty": 1, "price": 10},
            {"sku": skus[1], "qty": 2, "price": 0},
        ],
    }
    req = urllib.request.Request(
        f"{base}/v1/orders",
        data=json.dumps(body).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=5) as r:
        return int(r.status)


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def test_up_runs_the_whole_stack_and_stops_cleanly(tmp_path: Path) -> None:
    sim_port, port = free_port(), free_port()
    sim = spawn_role(["analytics-sim", "--port", str(sim_port)], {}, tmp_path / "sim.log")
    analytics = f"http://127.0.0.1:{sim_port}"
    log = tmp_path / "up.log"
    up = spawn_role(
        [
            "up",
            "--analytics-url",
            analytics,
            "--port",
            str(port),
            "--forwarders",
            "2",
            "--data-dir",
            str(tmp_path / "data"),
        ],
        {},
        log,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{analytics}/healthz", 30, sim)
        wait_http(f"{base}/readyz", 60, up)
        assert [_post_order(base, n) for n in range(90)] == [201] * 90
        deadline = time.monotonic() + 30
        while _get(f"{analytics}/admin/state")["accepted"] < 180:
            assert time.monotonic() < deadline, "events did not reach analytics"
            time.sleep(0.2)
        top = _get(f"{analytics}/v1/popularity?top=1")["top"]
        assert top == [{"sku": "gift", "qty": 180.0}]
        printed = log.read_text()
        assert f"order API  {base}/v1/orders" in printed
        metrics_ports = [
            int(p) for p in re.findall(r"forwarder  #\d metrics http://127.0.0.1:(\d+)/", printed)
        ]
        assert len(metrics_ports) == 2
        redis_port = int(printed.split("queue      redis://127.0.0.1:")[1].split("/")[0])
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
        assert "trackrelay up: stopped" in log.read_text()
        for p in [port, redis_port, *metrics_ports]:
            assert not _listening(p), f"port {p} still open after trackrelay up stopped"
    finally:
        stop_all([up, sim])


def test_a_queue_quota_alone_keeps_the_outbox_within_the_bound_up_prints(tmp_path: Path) -> None:
    """``up --queue-quota`` with no outbox quota, then the queue's Redis goes away while
    orders keep coming: every order is accepted, and the outbox never holds more rows than
    the bound ``up`` printed at start (derived from the queue quota). One shopper posts
    30 lines a second: the guard, checking every 0.25 s, trims to 90 % of the bound, so
    the last tenth is over three seconds of arrivals (its bound is that of a periodic
    check: docs/architecture.md)."""
    import sqlite3

    from trackrelay.config.settings import derived_outbox_quota
    from trackrelay.local.embedded_redis import EmbeddedRedis

    sim_port, port = free_port(), free_port()
    sim = spawn_role(["analytics-sim", "--port", str(sim_port)], {}, tmp_path / "sim.log")
    redis = EmbeddedRedis(tmp_path / "redis").start()
    data = tmp_path / "data"
    log = tmp_path / "up.log"
    up = spawn_role(
        [
            *("up", "--analytics-url", f"http://127.0.0.1:{sim_port}", "--port", str(port)),
            *("--redis-url", redis.url, "--queue-quota", "64KiB", "--data-dir", str(data)),
        ],
        {},
        log,
    )
    base = f"http://127.0.0.1:{port}"
    peak = 0
    try:
        wait_http(f"{base}/readyz", 60, up)
        pattern = re.compile(r"outbox (\d+) rows \(derived from the queue quota")
        deadline = time.monotonic() + 30
        while not (printed := pattern.search(log.read_text())):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        bound = int(printed.group(1))
        assert bound == derived_outbox_quota(64 * 1024)
        redis.stop()  # the queue is unreachable from here on
        db = sqlite3.connect(data / "trackrelay.db", timeout=5)
        for n in range(700):  # 1,400 lines of SKUs never repeated (folding cannot help)
            assert _post_order(base, n, unique=True) == 201
            peak = max(peak, db.execute("SELECT count(*) FROM outbox").fetchone()[0])
            time.sleep(1 / 15)
        db.close()
    finally:
        stop_all([up, sim])
    assert peak <= bound, f"the outbox held {peak} rows; up printed a bound of {bound}"
    assert peak > 0.8 * bound, f"the load never pressed on the bound (peak {peak})"
