"""Every role under its own Redis user (the chart's files/redis-users.yaml): Redis refuses
nothing the role does, through a quota that fills and sheds, and refuses what no role
should do (reconfigure, flush, write as the operator, keys outside trackrelay:*).
"""

from __future__ import annotations

import asyncio
import json
import secrets
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import redis
import yaml

from tests.integration.conftest import wait_for
from tests.integration.test_workers import ORDER
from tests.integration.test_workers import post as placed
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.loop.observe import observe
from trackrelay.queue import client
from trackrelay.queue.keys import STREAM
from trackrelay.runtime.ports import free_port

USERS_FILE = Path(__file__).resolve().parents[2] / "charts/trackrelay/files/redis-users.yaml"
QUOTA = 256 * 1024


def add_users(server: EmbeddedRedis) -> dict[str, str]:
    """The chart's users in ``server``, each with a fresh password: role -> its URL."""
    users: dict[str, str] = yaml.safe_load(USERS_FILE.read_text())
    urls = {}
    with redis.Redis.from_url(server.url) as admin:
        for role, rules in users.items():
            password = secrets.token_hex(16)
            admin.execute_command(
                "ACL", "SETUSER", role, "reset", "on", f">{password}", *rules.split()
            )
            urls[role] = f"redis://{role}:{password}@127.0.0.1:{server.port}/0"
    return urls


def post(base: str, n: int) -> None:
    placed(base, {**ORDER, "items": [{"sku": f"sku-{n % 500}", "qty": 1, "price": 5}] * 3})


def fault(sim: str, mode: str) -> None:
    body = json.dumps({"mode": mode}).encode()
    req = urllib.request.Request(f"{sim}/admin/fault", data=body, method="POST")
    with urllib.request.urlopen(req, timeout=5):
        pass


def test_every_role_runs_under_its_own_user_and_redis_refuses_it_nothing(
    redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    urls = add_users(redis_server)
    sim_port, api_port = free_port(), free_port()
    sim, api = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{api_port}"
    env = {"TRACKRELAY_QUEUE_QUOTA": str(QUOTA), "TRACKRELAY_DATA_DIR": str(tmp_path / "d")}
    procs = [spawn_role(["analytics-sim", "--port", str(sim_port)], {}, tmp_path / "sim.log")]
    try:
        orders_env = {**env, "TRACKRELAY_REDIS_URL": urls["relay"]}
        orders_env["TRACKRELAY_DATABASE_URL"] = f"sqlite:///{tmp_path / 'orders.db'}"
        procs.append(
            spawn_role(["orders", "--port", str(api_port)], orders_env, tmp_path / "o.log")
        )
        forwarder_env = {**env, "TRACKRELAY_REDIS_URL": urls["forwarder"]}
        forwarder_env["TRACKRELAY_ANALYTICS_URL"] = sim
        forwarder = ["forwarder", "--consumer-name", "fw-0", "--batch-size", "20"]
        procs.append(spawn_role(forwarder, forwarder_env, tmp_path / "f.log"))
        wait_http(f"{sim}/healthz", 30, procs[0])
        wait_http(f"{api}/readyz", 60, procs[1])
        for n in range(20):
            post(api, n)
        wait_for(lambda: state(sim)["lines"] == 60, 60, "the first orders counted")
        # Analytics away: the queue fills its quota and the relay sheds (its scripts run).
        fault(sim, "down")
        for n in range(20, 400):
            post(api, n)
        seen = asyncio.run(observe_as(urls["operator"]))
        assert seen.queue_bytes is not None and seen.queue_bytes > 0
        assert [f.name for f in seen.forwarders] == ["fw-0"]
        fault(sim, "healthy")
        wait_for(lambda: lag(redis_server.url) == 0, 90, "the queue drained")
        with redis.Redis.from_url(redis_server.url) as admin:
            refused: Any = admin.execute_command("ACL", "LOG")
            assert refused == [], refused[:3]
        assert_refused(urls)
    finally:
        stop_all(procs)


async def observe_as(url: str) -> Any:
    """What the operator observes, connected as ``url``'s user."""
    operator = client.connect(url)
    try:
        return await observe(operator, QUOTA)
    finally:
        await operator.aclose()


def state(sim: str) -> dict[str, Any]:
    with urllib.request.urlopen(f"{sim}/admin/state", timeout=5) as r:
        return dict(json.loads(r.read()))


def lag(url: str) -> int:
    with redis.Redis.from_url(url) as r:
        groups: Any = r.xinfo_groups(STREAM)
        return int(groups[0]["lag"] or 0) + int(groups[0]["pending"])


def assert_refused(urls: dict[str, str]) -> None:
    """What no role may do is refused (and the refusals are not a role's own work)."""
    with redis.Redis.from_url(urls["operator"]) as r:
        assert r.xlen(STREAM) >= 0  # it reads
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.xadd(STREAM, {"e": "{}"})
    with redis.Redis.from_url(urls["forwarder"]) as r:
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.config_set("maxmemory", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.flushall()
    with redis.Redis.from_url(urls["relay"]) as r:
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.set("not-ours", "1")
        with pytest.raises(redis.exceptions.NoPermissionError):
            r.execute_command("SHUTDOWN", "NOSAVE")
    wrong = redis.Redis.from_url(urls["relay"].replace("relay:", "relay:wrong"))
    with wrong, pytest.raises(redis.exceptions.AuthenticationError):
        wrong.ping()
