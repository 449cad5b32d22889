"""Commands that cannot start say why in one line, exit non-zero, and leak no password.

Real processes against real (or really unreachable) PostgreSQL and Redis.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import redis

from tests.integration.conftest import run_cli
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.runtime.ports import free_port

SECRET = "s3cret-pw"


def closed_port() -> int:
    return free_port()  # bound and released: nothing listens there


def unreachable_db() -> str:
    return f"postgresql://shop:{SECRET}@127.0.0.1:{closed_port()}/orders"


def unreachable_redis() -> str:
    return f"redis://:{SECRET}@127.0.0.1:{closed_port()}/0"


def assert_one_clear_line(done: object, must_say: str) -> None:
    import subprocess

    assert isinstance(done, subprocess.CompletedProcess)
    out = done.stdout + done.stderr
    assert done.returncode != 0, out
    assert "Traceback" not in out, out
    assert SECRET not in out, out
    last = done.stderr.strip().splitlines()[-1]
    assert must_say in last, out
    assert len(done.stderr.strip().splitlines()) <= 3, out


@pytest.mark.parametrize(
    ("args", "must_say"),
    [
        (["orders", "--no-relay", "--port", "0"], "cannot reach the order database"),
        (["migrate"], "cannot reach the order database"),
        (["relay"], "cannot reach the order database"),
    ],
)
def test_database_unreachable(args: list[str], must_say: str) -> None:
    env = {
        "TRACKRELAY_DATABASE_URL": unreachable_db(),
        "TRACKRELAY_REDIS_URL": unreachable_redis(),
        "TRACKRELAY_START_WAIT": "0",  # one try (the wait itself: below)
    }
    assert_one_clear_line(run_cli(args, env), must_say)


@pytest.mark.parametrize(
    ("args", "what"),
    [
        (["relay"], "the order database"),
        (["forwarder", "--analytics-url", "http://127.0.0.1:1"], "the queue redis"),
    ],
)
def test_a_store_that_never_comes_is_waited_for_then_named(args: list[str], what: str) -> None:
    """A bounded wait at start, with a line of progress per try, then the one clear line."""
    import time

    env = {
        "TRACKRELAY_DATABASE_URL": unreachable_db(),
        "TRACKRELAY_REDIS_URL": unreachable_redis(),
        "TRACKRELAY_START_WAIT": "3",
    }
    started = time.monotonic()
    done = run_cli(args, env)
    assert time.monotonic() - started >= 3
    assert f"waiting for {what} (try 1," in done.stderr
    assert f"waiting for {what} (try 2," in done.stderr
    assert "cannot reach" in done.stderr.strip().splitlines()[-1]
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert SECRET not in done.stdout + done.stderr


@pytest.mark.postgres
def test_a_service_started_before_its_database_waits_and_serves(tmp_path: Path) -> None:
    """A fresh install starts everything at once: the order service is up before
    PostgreSQL, waits for it, then serves; no crash, no restart."""
    import time

    from tests.support.postgres import PostgresCluster

    cluster = PostgresCluster(tmp_path / "pg").start()
    cluster.pg_stop()
    port = free_port()
    env = {"TRACKRELAY_DATABASE_URL": cluster.url(), "TRACKRELAY_START_WAIT": "60"}
    log = tmp_path / "orders.log"
    proc = _start_orders(["--no-relay", "--port", str(port)], env, log)
    try:
        deadline = time.monotonic() + 30
        while "waiting for the order database (try 2," not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        cluster.pg_start()
        _until_ready(proc, port, log, 60)
    finally:
        proc.terminate()
        proc.wait(10)
        cluster.stop()
    assert "the order database answered after" in log.read_text()


@pytest.mark.parametrize(
    ("args", "must_say"),
    [
        (["dlq", "list"], "cannot reach the queue redis"),
        (["forwarder", "--analytics-url", "http://127.0.0.1:1"], "cannot reach the queue redis"),
    ],
)
def test_redis_unreachable(args: list[str], must_say: str, tmp_path: Path) -> None:
    env = {
        "TRACKRELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}",
        "TRACKRELAY_REDIS_URL": unreachable_redis(),
        "TRACKRELAY_START_WAIT": "0",
    }
    assert_one_clear_line(run_cli(args, env), must_say)


@pytest.mark.parametrize(
    "args", [["relay"], ["forwarder", "--analytics-url", "http://127.0.0.1:1"], ["dlq", "list"]]
)
def test_a_redis_that_may_evict_is_refused(
    args: list[str], redis_server: EmbeddedRedis, tmp_path: Path
) -> None:
    with redis.Redis.from_url(redis_server.url) as r:
        r.config_set("maxmemory-policy", "allkeys-lru")
    env = {
        "TRACKRELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}",
        "TRACKRELAY_REDIS_URL": redis_server.url,
    }
    done = run_cli(args, env)
    assert_one_clear_line(done, "maxmemory-policy allkeys-lru")
    assert "noeviction" in done.stderr


def test_orders_start_while_the_queue_redis_is_down_and_say_so(tmp_path: Path) -> None:
    """Orders never wait on the queue: the service starts, warns, and serves."""
    port = free_port()
    env = {
        "TRACKRELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}",
        "TRACKRELAY_REDIS_URL": unreachable_redis(),
    }
    log = tmp_path / "orders.log"
    proc = _start_orders(["--port", str(port)], env, log)
    try:
        _until_ready(proc, port, log, 30)
    finally:
        proc.terminate()
        proc.wait(10)
    text = log.read_text()
    assert "cannot reach the queue redis" in text
    assert SECRET not in text


def test_a_relay_starts_while_the_queue_redis_is_down_and_guards_the_outbox(
    tmp_path: Path,
) -> None:
    """A relay started during an outage keeps running (and so keeps the outbox within its
    quota: its guard needs only the database), says so, and retries the queue."""
    import os
    import subprocess
    import sys
    import time

    env = {
        "TRACKRELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}",
        "TRACKRELAY_REDIS_URL": unreachable_redis(),
        "TRACKRELAY_OUTBOX_QUOTA": "100",
    }
    log = tmp_path / "relay.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "trackrelay.cli", "relay"],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )
    try:
        deadline = time.monotonic() + 30
        while "cannot reach the queue redis" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        time.sleep(2.0)  # a few rounds against the unreachable queue
        assert proc.poll() is None, log.read_text()
    finally:
        proc.terminate()
        proc.wait(10)
    assert SECRET not in log.read_text()


def _answers(url: str) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=1) as r:
            return bool(r.status == 200)
    except OSError:
        return False


def test_servers_listen_where_host_says(
    redis_server: EmbeddedRedis, tmp_path: Path, start_sim: Any
) -> None:
    """``--host`` reaches every server: here a second loopback address, not 127.0.0.1."""
    from tests.integration.conftest import poll_until
    from trackrelay.local.processes import spawn_role, stop_all

    sim = start_sim()
    orders_port, fwd_port = free_port(), free_port()
    procs = [
        spawn_role(
            ["orders", "--no-relay", "--host", "127.0.0.2", "--port", str(orders_port)],
            {"TRACKRELAY_DATABASE_URL": f"sqlite:///{tmp_path / 'o.db'}"},
            tmp_path / "orders.log",
        ),
        spawn_role(
            ["forwarder", "--host", "127.0.0.2", "--metrics-port", str(fwd_port)],
            {"TRACKRELAY_REDIS_URL": redis_server.url, "TRACKRELAY_ANALYTICS_URL": sim.url},
            tmp_path / "fwd.log",
        ),
    ]
    try:
        for port in (orders_port, fwd_port):
            assert poll_until(functools.partial(_answers, f"http://127.0.0.2:{port}/healthz"), 30)
            assert not _answers(f"http://127.0.0.1:{port}/healthz")
    finally:
        stop_all(procs)
    assert [p.returncode for p in procs] == [0, 0]  # SIGTERM drains and exits cleanly


def _start_orders(args: list[str], env: dict[str, str], log: Path) -> Any:
    """``trackrelay orders ARGS`` as a process, its output in ``log``."""
    import os
    import subprocess
    import sys

    with log.open("wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "trackrelay.cli", "orders", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def _until_ready(proc: Any, port: int, log: Path, timeout: float) -> None:
    """Until ``/readyz`` answers 200; fails if the process exits or time runs out."""
    import time
    import urllib.request

    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=1) as r:
                assert r.status == 200
                return
        except OSError:
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
