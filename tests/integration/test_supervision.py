"""`trackrelay up` supervises its children: each one killed under load comes back, none lost."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis

from trackrelay import cli
from trackrelay.config.settings import ControllerSettings, OrderSettings
from trackrelay.db import engine as database
from trackrelay.local.live import Shoppers
from trackrelay.local.stack import LocalStack, StackOptions, read_status
from trackrelay.orders import audit
from trackrelay.queue.keys import FORWARDER_STATS_PREFIX, STREAM
from trackrelay.relay import outbox
from trackrelay.runtime.ports import free_port

FORWARDER_ENV = {
    # Entries a killed forwarder held are taken over after 10 s, not the default 30 s.
    "TRACKRELAY_CLAIM_IDLE": "10",
    "TRACKRELAY_CLAIM_INTERVAL": "1",
    "TRACKRELAY_PUSH_TIMEOUT": "2",
    "TRACKRELAY_REDIS_TIMEOUT": "2",
}


def redis_answers(url: str) -> bool:
    try:
        with redis.Redis.from_url(url, socket_timeout=1, socket_connect_timeout=1) as r:
            return bool(r.ping())
    except redis.RedisError:
        return False


def all_started(stack: LocalStack) -> bool:
    """The relay and both forwarders are past their start: the relay has logged the
    line that follows its queue check, each forwarder has published its view."""
    relay_log = stack.logs / "relay.log"
    if not relay_log.exists() or " trackrelay.local.runner: relay " not in relay_log.read_text():
        return False
    try:
        with redis.Redis.from_url(stack.redis_url, socket_timeout=1) as r:
            forwarders: Any = r.keys(FORWARDER_STATS_PREFIX + "*")
            return len(forwarders) >= 2
    except redis.RedisError:
        return False


def options(tmp_path: Path) -> StackOptions:
    return StackOptions(
        settings=OrderSettings(data_dir=tmp_path / "data", port=free_port()),
        control=ControllerSettings(replicas_min=2, replicas_max=2, interval=0.5),
        forwarders=2,
        forwarder_env=FORWARDER_ENV,
        quiet=True,
    )


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.1)


def zombie(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


async def accounted(stack: LocalStack, lines: int, timeout: float) -> dict[str, object]:
    """Wait until the outbox and stream are empty and analytics counted ``lines`` events."""
    engine = database.make_engine(stack.options.settings.resolved_database_url())
    assert stack.redis is not None
    try:
        async with httpx.AsyncClient(timeout=5) as client:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    state = (await client.get(f"{stack.sim_url}/admin/state")).json()
                except httpx.TransportError:  # the restarted simulator is not listening yet
                    state = {"accepted": "(not answering)"}
                left = await outbox.count_outbox(engine)
                stream = await stack.redis.xlen(STREAM)
                done = isinstance(state["accepted"], int) and state["accepted"] >= lines
                if done and left == 0 and stream == 0:
                    return dict(state)
                assert time.monotonic() < deadline, (
                    f"not accounted for: analytics {state['accepted']} of {lines}, "
                    f"outbox {left}, stream {stream}"
                )
                await asyncio.sleep(0.5)
    finally:
        await engine.dispose()


async def test_every_child_killed_under_load_is_reaped_restarted_and_nothing_is_lost(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with LocalStack(options(tmp_path)) as stack:
        stop_load = asyncio.Event()
        shoppers = Shoppers(stack.api, rate=25)
        load = asyncio.create_task(shoppers.run(stop_load))
        try:
            # A child still starting when Redis dies exits and is restarted once more
            # (start needs the queue): kills begin once every child is past its start.
            await until(lambda: all_started(stack), 60, "every child started")
            for name in ("redis", "relay", "forwarder-0", "analytics-sim"):
                await asyncio.sleep(2)
                child = stack.supervisor.children[name]
                assert child.process is not None
                pid, before = child.process.pid, child.restarts
                os.kill(pid, signal.SIGKILL)
                await until(
                    lambda c=child, b=before: c.restarts == b + 1 and c.running,  # type: ignore[misc]
                    40,
                    f"{name} was not restarted",
                )
                assert not zombie(pid), f"{name} (pid {pid}) left a zombie"
                # The next child killed restarts against a Redis that answers: a child
                # started before its queue is back exits and is restarted once more
                # (as it should), which would make the count below the machine's.
                await until(lambda: redis_answers(stack.redis_url), 40, "redis answering")
            await asyncio.sleep(3)
            await until(lambda: shoppers.accepted > 200, 60, "200 orders through the kills")
        finally:
            stop_load.set()
            await load
        assert shoppers.accepted > 200 and shoppers.refused == 0
        engine = database.make_engine(stack.options.settings.resolved_database_url())
        try:
            assert await audit.missing_orders(engine, shoppers.ids) == []
            lines = await audit.count_lines(engine)
            truth = await audit.popularity(engine)
        finally:
            await engine.dispose()
        state = await accounted(stack, lines, timeout=90)
        assert state["accepted"] == lines  # every event once: duplicates are dropped
        async with httpx.AsyncClient() as client:
            seen = (await client.get(f"{stack.sim_url}/v1/popularity?top=1000")).json()
        assert {t["sku"]: t["qty"] for t in seen["top"]} == truth
        await until(
            lambda: read_status(stack.data_dir)["restarts"] == 4, 10, "the next status write"
        )
        status = read_status(stack.data_dir)
        assert {n: c["restarts"] for n, c in status["children"].items()} == {
            "redis": 1,
            "analytics-sim": 1,
            "relay": 1,
            "forwarder-0": 1,
            "forwarder-1": 0,
        }
        assert cli.main(["status", "--data-dir", str(stack.data_dir)]) == 0
        printed = capsys.readouterr().out
        assert "redis            pid" in printed and ", 1 restarts" in printed
        assert "forwarder-1" in printed and "budget" in printed
    # Once up has stopped, status says so and exits 1.
    assert cli.main(["status", "--data-dir", str(stack.data_dir)]) == 1
    assert "is not running" in capsys.readouterr().out
