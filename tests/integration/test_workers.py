"""``trackrelay orders --workers 2``: two request processes, one relay process beside them."""

from __future__ import annotations

import json
import os
import re
import signal
import urllib.request
from pathlib import Path
from typing import Any

import redis

from tests.integration.conftest import stream_event_ids_sync, wait_for
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, wait_http
from trackrelay.runtime.ports import free_port

ORDER = {"customer_id": "c", "items": [{"sku": "a", "qty": 1, "price": 5}]}


def post(base: str, order: dict[str, Any] | None = None) -> str:
    req = urllib.request.Request(
        f"{base}/v1/orders",
        data=json.dumps(order or ORDER).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        assert r.status == 201
        return str(json.loads(r.read())["order_id"])


def test_workers_serve_orders_and_the_relay_runs_apart(
    database_url: str, redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    port = free_port()
    proc = spawn_role(
        ["orders", "--workers", "2", "--port", str(port), "--data-dir", str(tmp_path / "d")],
        {"TRACKRELAY_DATABASE_URL": database_url, "TRACKRELAY_REDIS_URL": redis_server.url},
        tmp_path / "orders.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{base}/readyz", 60, proc)
        ids = {post(base) for _ in range(40)}
        wait_for(
            lambda: {e.split(":")[0] for e in stream_event_ids_sync(redis_server.url)} == ids,
            30,
            "every order's event in the stream",
        )

        def pids() -> set[int]:
            return {int(line.split("[")[1].split("]")[0]) for line in _worker_lines(tmp_path)}

        # Both workers start; on a busy machine the second may come up after the first
        # has served every order.
        wait_for(lambda: len(pids()) == 2, 30, "two worker processes")
        # The relay child killed: it is restarted, and orders taken meanwhile relayed.
        log = (tmp_path / "orders.log").read_text()
        relay_pid = int(re.findall(r"relay running as process (\d+)", log)[0])
        os.kill(relay_pid, signal.SIGKILL)
        later = {post(base) for _ in range(10)}
        wait_for(
            lambda: "relay restarted as pid" in (tmp_path / "orders.log").read_text(),
            30,
            "the relay restarted",
        )
        wait_for(
            lambda: (
                {e.split(":")[0] for e in stream_event_ids_sync(redis_server.url)} == ids | later
            ),
            30,
            "the orders taken while the relay was down in the stream",
        )
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(30)
    assert code == 0, (tmp_path / "orders.log").read_text()
    with redis.Redis.from_url(redis_server.url) as r:
        assert r.ping()


def _worker_lines(tmp_path: Path) -> list[str]:
    return [
        line
        for line in (tmp_path / "orders.log").read_text().splitlines()
        if "Started server process [" in line
    ]
