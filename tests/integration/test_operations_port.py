"""``orders --metrics-port``: metrics and the API's documents off the public port.

And the simulator without ``/admin`` (``analytics-sim --no-admin``), as the chart runs it.
"""

from __future__ import annotations

import json
import signal
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.integration.test_workers import post
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, wait_http
from trackrelay.runtime.ports import free_port

ACCEPTED = "trackrelay_orders_accepted_total "


def accepted(text: str) -> float:
    (line,) = [line for line in text.splitlines() if line.startswith(ACCEPTED)]
    return float(line.split()[1])


def status(url: str) -> int:
    try:
        with urllib.request.urlopen(url, timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def read(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return str(r.read().decode())


@pytest.mark.parametrize("workers", [1, 2])
def test_metrics_and_documents_are_served_only_on_their_own_port(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path, workers: int
) -> None:
    port, ops_port = free_port(), free_port()
    args = ["orders", "--port", str(port), "--metrics-port", str(ops_port)]
    args += ["--workers", str(workers), "--data-dir", str(tmp_path / "d")]
    env = {"TRACKRELAY_DATABASE_URL": database_url, "TRACKRELAY_REDIS_URL": redis_server.url}
    proc = spawn_role(args, env, tmp_path / "orders.log")
    api, ops = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}"
    try:
        wait_http(f"{api}/readyz", 60, proc)
        wait_http(f"{ops}/metrics", 30, proc)
        placed = {post(api) for _ in range(workers * 4)}
        assert len(placed) == workers * 4
        assert status(f"{api}/healthz") == 200
        for path in ("/metrics", "/docs", "/openapi.json", "/redoc"):
            assert status(api + path) == 404, path
        document = json.loads(read(f"{ops}/openapi.json"))
        assert "/v1/orders" in document["paths"] and "/metrics" not in document["paths"]
        assert "OrderRequest" in document["components"]["schemas"]
        assert status(f"{ops}/docs") == 200
        assert status(f"{ops}/v1/orders/nothing") == 404  # no orders on the operations port
        # one process counts them all; of two, each scrape reads the one that answered
        counts = [accepted(read(f"{ops}/metrics")) for _ in range(1 if workers == 1 else 20)]
        if workers == 1:
            assert counts == [len(placed)]
        else:
            assert max(counts) >= 1 and all(c <= len(placed) for c in counts), counts
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, (tmp_path / "orders.log").read_text()


def test_a_taken_metrics_port_stops_the_start_naming_it(database_url: str, tmp_path: Path) -> None:
    import socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    ops_port = taken.getsockname()[1]
    try:
        args = ["orders", "--port", str(free_port()), "--metrics-port", str(ops_port)]
        args += ["--no-relay", "--data-dir", str(tmp_path / "d")]
        proc = spawn_role(args, {"TRACKRELAY_DATABASE_URL": database_url}, tmp_path / "o.log")
        code = proc.wait(60)
    finally:
        taken.close()
    log = (tmp_path / "o.log").read_text()
    assert code != 0 and f"cannot listen on 127.0.0.1:{ops_port}" in log, log[-2000:]


def test_the_simulator_without_admin_has_no_admin_routes(tmp_path: Path) -> None:
    port = free_port()
    proc = spawn_role(["analytics-sim", "--port", str(port), "--no-admin"], {}, tmp_path / "s.log")
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/healthz", 30, proc)
        assert status(f"{base}/admin/state") == 404
        body = json.dumps({"mode": "down"}).encode()
        req = urllib.request.Request(f"{base}/admin/fault", data=body, method="POST")
        try:
            urllib.request.urlopen(req, timeout=5)
            answered = 200
        except urllib.error.HTTPError as exc:
            answered = exc.code
        assert answered == 404
        assert status(f"{base}/healthz") == 200 and status(f"{base}/metrics") == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
