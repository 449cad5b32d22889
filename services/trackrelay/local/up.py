"""``trackrelay up`` and ``trackrelay status``: the stack until Ctrl-C, and what it is doing."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import time
from typing import Any

import httpx

from trackrelay.config.settings import StoreSettings
from trackrelay.local.live import HEALTH_WORDS, Shoppers, status_line
from trackrelay.local.stack import LocalStack, StackOptions, read_status
from trackrelay.runtime.signals import stop_on_signals

log = logging.getLogger(__name__)


def controller_parts(status: dict[str, Any]) -> list[str]:
    """The status line's controller part: budget, forwarders, restarts, the latest reason."""
    parts = []
    d = status.get("decision")
    if d is not None:
        health = HEALTH_WORDS[d["healthy"]]
        held = " (holding)" if d["held"] else ""
        parts.append(
            f"budget {d['budget']:.0f} ev/s, forwarders {status['forwarders']}"
            f"/{d['usable_replicas']} usable, analytics {health}{held}"
        )
    verdict = (status.get("observation") or {}).get("analytics")
    if verdict is not None:
        decided = f" ({verdict['query']})" if verdict.get("query") else ""
        parts.append(f"prometheus {verdict['state']}{decided}")
    parts.append(f"restarts {status.get('restarts', 0)}")
    reasons = status.get("reasons") or []
    if reasons:
        parts.append(f"last: {_reason(reasons[-1])[1]}")
    return parts


async def up(options: StackOptions, load: float = 0.0, every: float = 5.0) -> int:
    """The whole stack until SIGINT/SIGTERM; ``load`` > 0 adds synthetic orders, a status line."""
    async with stop_on_signals() as signalled, LocalStack(options) as stack:
        shoppers = Shoppers(stack.api, load) if load > 0 else None
        tasks = []
        if shoppers is not None:
            print(f"trackrelay up: load       {load:g} synthetic orders/s", flush=True)
            tasks.append(asyncio.create_task(shoppers.run(stack.stop)))
        assert stack.redis is not None
        async with httpx.AsyncClient(timeout=2) as client:
            while not signalled.is_set() and not stack.stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(signalled.wait(), timeout=every)
                if signalled.is_set():
                    break
                try:
                    line = await status_line(stack.redis, shoppers, stack.sim_url, client)
                except Exception as exc:  # Redis may be restarting: say so, carry on
                    line = f"queue unreachable ({type(exc).__name__})"
                parts = [line, *controller_parts(stack.status())]
                print("trackrelay up:", " | ".join(parts), flush=True)
        stack.stop.set()
        await asyncio.gather(*tasks, return_exceptions=True)
    print("trackrelay up: stopped")
    return 0


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def format_status(status: dict[str, Any], now: float | None = None) -> str:
    """``trackrelay status``'s text: decision, observation, children, the last reasons."""
    now = time.time() if now is None else now
    lines = [f"trackrelay up (pid {status['pid']}): order API {status['api']}"]
    age = now - float(status["at"])
    if age > 10:
        lines.append(f"  (this status is {age:.0f} s old)")
    d = status.get("decision")
    if d is None:
        lines.append("controller: off")
    else:
        health = HEALTH_WORDS[d["healthy"]]
        lines += [
            "decision:",
            f"  budget       {d['budget']:.0f} events/s",
            f"  forwarders   {d['replicas']} decided, {status['forwarders']} running "
            f"(the budget can use {d['usable_replicas']} at {d['per_replica']:.0f} ev/s each)",
            f"  shedding     {d['shedding']}",
            f"  analytics    {health}: {d['health']}",
        ]
        if d["held"]:
            lines.append("  HOLDING the last decision (fail static)")
    o = status.get("observation")
    if o is not None:
        lines += [
            "observed:",
            f"  backlog      {o['lag']} waiting + {o['pending']} being delivered",
        ]
        if o.get("queue_quota"):
            share = o["queue_bytes"] / o["queue_quota"]
            lines.append(
                f"  queue memory {o['queue_bytes']} of {o['queue_quota']} bytes ({share:.0%})"
            )
        if o.get("outbox_quota"):
            rows, limit = o.get("outbox_rows") or 0, o["outbox_quota"]
            lines.append(f"  outbox       {rows} of {limit} rows ({rows / limit:.0%})")
        verdict = o.get("analytics")
        if verdict is not None:
            decided = f" (query {verdict['query']})" if verdict.get("query") else ""
            lines.append(f"  prometheus   {verdict['state']}{decided}: {verdict['why']}")
        for f in o.get("forwarders", []):
            p99 = "-" if f["latency_p99"] is None else f"{f['latency_p99'] * 1000:.0f} ms"
            lines.append(
                f"  {f['name']}: {f['events_per_second']:.0f} ev/s, p99 {p99}, "
                f"{f['pushes']} pushes, {f['errors']} failed, {f['throttled']} 429, "
                f"breaker {f['breaker']}"
            )
    lines.append("processes:")
    for name, c in status.get("children", {}).items():
        state = f"pid {c['pid']}, up {c['up_seconds']:.0f} s" if c["running"] else "restarting"
        lines.append(f"  {name:<16} {state}, {c['restarts']} restarts")
    reasons = status.get("reasons") or []
    if reasons:
        lines.append("latest reasons:")
        for reason in reasons[-10:]:
            at, text = _reason(reason)
            lines.append(f"  {time.strftime('%H:%M:%S', time.localtime(at))} {text}")
    return "\n".join(lines)


def status(settings: StoreSettings, as_json: bool = False) -> int:
    """Print what ``trackrelay up`` in ``settings.data_dir`` decided and observed last."""
    try:
        data = read_status(settings.data_dir)
    except FileNotFoundError:
        print(f"trackrelay status: no trackrelay up has run in {settings.data_dir}/")
        return 1
    except ValueError as exc:
        print(f"trackrelay status: {settings.data_dir}/status.json is unreadable ({exc})")
        return 1
    running = not data.get("stopped") and _alive(int(data.get("pid", 0)))
    if not running:
        pid = data.get("pid")
        print(f"trackrelay status: trackrelay up (pid {pid}) is not running; its last status:")
    print(json.dumps(data, indent=2) if as_json else format_status(data))
    return 0 if running else 1


def _reason(reason: Any) -> tuple[float, str]:
    """(time, text) of a reason in ``status.json``: a record, or the ``[at, text]`` pair an
    ``up`` of version 0.1.0 writes."""
    if isinstance(reason, dict):
        return float(reason["at"]), str(reason["text"])
    return float(reason[0]), str(reason[1])
