"""``trackrelay demo``: analytics slow, down, overloaded, recovering, on one machine, with a
live view and a report.

The whole stack (``LocalStack``: embedded Redis and SQLite, the simulator,
relay, supervised forwarders, the controller) runs while synthetic shoppers
send orders and the scenario walks analytics through its phases. Every second
one sample is recorded; at the end the demo stops the load, lets the backlog
drain, reads every accepted order back from the database, compares analytics'
popularity with the database's, and writes ``summary.json``, ``timeline.json``
and ``report.html`` into the report directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from trackrelay.config.settings import ControllerSettings, OrderSettings
from trackrelay.control.controller import Reason, describe
from trackrelay.db import engine as database
from trackrelay.local import report
from trackrelay.local.live import Shoppers, human_size
from trackrelay.local.scenario import DEFAULT, Phase, Scenario
from trackrelay.local.stack import LocalStack, StackOptions
from trackrelay.local.view import View
from trackrelay.loop.shell import reason_log
from trackrelay.orders import audit
from trackrelay.queue import quota, shards, streams, views
from trackrelay.queue.keys import RELAY_STATS_PREFIX
from trackrelay.relay import outbox
from trackrelay.runtime.signals import stop_on_signals

DEMO_FORWARDER_ENV = {
    # Small pushes, six lanes: a forwarder carries 25 events per push, so at 1.2 s a push
    # it delivers up to about 125 ev/s (the shop sends 80) and draining a big backlog
    # takes more of them.
    "TRACKRELAY_BATCH_SIZE": "25",
    "TRACKRELAY_CONCURRENCY": "6",
    "TRACKRELAY_PUSH_TIMEOUT": "2",
    "TRACKRELAY_REDIS_TIMEOUT": "2",
    "TRACKRELAY_CLAIM_IDLE": "10",
    "TRACKRELAY_CLAIM_INTERVAL": "2",
    "TRACKRELAY_BREAKER_OPEN_MAX": "1",
    # A push may carry a fifth of a second's budget: at the small budgets of the story a
    # push of 1% would be one event, and a 100 ms analytics would cap delivery far below it.
    "TRACKRELAY_BUDGET_TOLERANCE": "0.2",
}
DEMO_CONTROL = ControllerSettings(
    budget_initial=400,
    budget_min=10,
    budget_max=2000,
    replicas_min=1,
    replicas_max=4,
    scale_up_window=3,
    scale_down_window=15,
    drain_seconds=15,
    replica_rate=100,
    interval=1.0,
)
DEMO_QUOTA = 1024 * 1024


@dataclass
class DemoOptions:
    settings: OrderSettings
    control: ControllerSettings
    scenario: Scenario = DEFAULT
    live: bool = True
    report_dir: Path = Path("demo-report")
    drain: float = 40.0
    """Seconds to wait, after the story, for the backlog to reach analytics: counted from
    the last progress, so a slow machine that is still draining is not cut short."""


@dataclass
class Drain:
    """When to stop waiting for the backlog: once it is empty, or once it has not shrunk for
    ``patience`` seconds, and never past ``DRAIN_CAP`` times ``patience`` in all."""

    patience: float
    started: float
    best: int | None = None
    progressed: float = 0.0

    def waiting(self, left: int, now: float) -> bool:
        if left == 0:
            return False
        if self.best is None or left < self.best:
            self.best, self.progressed = left, now
        stalled = now - max(self.progressed, self.started) >= self.patience
        return not stalled and now - self.started < DRAIN_CAP * self.patience


DRAIN_CAP = 3


def demo_settings(base: OrderSettings, fields_set: set[str]) -> OrderSettings:
    """The demo's defaults for what the user did not set: a 1 MiB queue quota, a fresh store."""
    update: dict[str, Any] = {}
    if "queue_quota" not in fields_set:
        update["queue_quota"] = DEMO_QUOTA
    if "outbox_quota" not in fields_set:
        update["outbox_quota"] = 100_000
    if "data_dir" not in fields_set:
        update["data_dir"] = Path(".trackrelay") / "demo"
    return base.model_copy(update=update)


class Demo:
    def __init__(self, options: DemoOptions, view: View) -> None:
        self.options = options
        self.view = view
        self.samples: list[dict[str, Any]] = []
        self.started = 0.0
        self.reasons: list[tuple[float, Reason]] = []
        self._shown = 0
        """Controller reasons shown so far (``ControlLoop.recorded`` when last shown)."""

    async def _apply(self, client: httpx.AsyncClient, sim: str, phase: Phase) -> None:
        for path, body in (("/admin/fault", phase.fault), ("/admin/capacity", phase.capacity)):
            r = await client.post(f"{sim}{path}", json=body)
            r.raise_for_status()

    async def _sample(self, stack: LocalStack, shoppers: Shoppers, phase: str) -> dict[str, Any]:
        assert stack.redis is not None and stack.loop is not None
        now = time.time()
        orders_per_s, order_p99 = shoppers.recent(3.0)
        obs, d = stack.loop.observation, stack.loop.decision
        shed: dict[str, int] = {}
        with contextlib.suppress(Exception):
            for view in (await views.read_stats(stack.redis, RELAY_STATS_PREFIX)).values():
                for key, n in view.get("shed", {}).items():
                    shed[key] = shed.get(key, 0) + int(n)
        p99s = [f.latency_p99 for f in obs.forwarders if f.latency_p99 is not None] if obs else []
        lost, folded = report.shed_lines(shed)
        quota = obs.queue_quota if obs else None
        share = (
            obs.queue_bytes / obs.queue_quota
            if obs and obs.queue_quota and obs.queue_bytes is not None
            else None
        )
        row = {
            "t": round(now - self.started, 2),
            "wall": now,
            "phase": phase,
            "orders_per_s": round(orders_per_s, 1),
            "order_p99": order_p99,
            "orders_accepted": shoppers.accepted,
            "analytics_p99": max(p99s) if p99s else None,
            "p99_target": stack.spec.p99_target,
            "budget": d.budget if d else None,
            "delivered": round(sum(f.events_per_second for f in obs.forwarders), 1)
            if obs
            else None,
            "replicas": stack.forwarder_count(),
            "decided": d.replicas if d else None,
            "usable": d.usable_replicas if d else None,
            "backlog": obs.backlog if obs else None,
            "queue_bytes": obs.queue_bytes if obs else None,
            "quota": quota,
            "queue_share": share,
            "shedding": describe(d.shedding) if d else None,
            "healthy": d.health.healthy if d else None,
            "health": d.health.why if d else None,
            "held": d.held if d else None,
            "shed_folded": folded,
            "shed_lost": lost,
            "shed": shed,
            "restarts": stack.supervisor.restarts(),
        }
        self.samples.append(row)
        return row

    async def _show(self, stack: LocalStack, shoppers: Shoppers, phase: str) -> None:
        """Record this second's sample and show it with the reasons recorded since the last."""
        row = await self._sample(stack, shoppers, phase)
        assert stack.loop is not None
        reasons = stack.loop.reasons_since(self._shown)
        self._shown = stack.loop.recorded
        self.view.update(row, reasons, self.options.scenario.seconds)

    async def run(self) -> dict[str, Any]:
        opts = self.options
        scenario = opts.scenario
        settings = opts.settings
        shutil.rmtree(settings.data_dir, ignore_errors=True)  # the demo's accounting starts at zero
        stack_opts = StackOptions(
            settings=settings,
            control=opts.control,
            forwarders=opts.control.replicas_min,
            forwarder_env=DEMO_FORWARDER_ENV,
            quiet=True,
        )
        self.view.say(
            f"starting: embedded Redis (queue quota {human_size(settings.queue_quota or 0)}), "
            f"SQLite in {settings.data_dir}/, the analytics simulator, relay, forwarders"
        )
        async with stop_on_signals() as interrupted, LocalStack(stack_opts) as stack:
            assert stack.sim_url is not None and stack.redis is not None
            self.view.say(f"order API {stack.api}/v1/orders; story of {scenario.seconds:.0f} s")
            stop_load = asyncio.Event()
            shoppers = Shoppers(stack.api, scenario.phases[0].load, lanes=8)
            load = asyncio.create_task(shoppers.run(stop_load))
            async with httpx.AsyncClient(timeout=5) as client:
                self.started = time.time()
                current = -1
                with self.view:
                    while not interrupted.is_set():
                        elapsed = time.time() - self.started
                        if elapsed >= scenario.seconds:
                            break
                        index, phase = scenario.at(elapsed)
                        if index != current:
                            current = index
                            await self._apply(client, stack.sim_url, phase)
                            shoppers.rate = phase.load
                            self.view.phase(index, len(scenario.phases), phase)
                        await self._show(stack, shoppers, phase.name)
                        with contextlib.suppress(TimeoutError):
                            await asyncio.wait_for(interrupted.wait(), timeout=1.0)
                    stop_load.set()
                    await load
                    self.view.say(
                        f"story over: {shoppers.accepted} orders accepted; the backlog drains"
                    )
                    engine = database.make_engine(settings.resolved_database_url())
                    try:
                        drain = Drain(opts.drain, time.time())
                        while not interrupted.is_set():
                            await self._show(stack, shoppers, "drain")
                            left = await _left(stack, engine)
                            if not drain.waiting(sum(left.values()), time.time()):
                                break
                            await asyncio.sleep(1.0)
                        await asyncio.sleep(1.5)  # the relay publishes its last counts
                        await self._sample(stack, shoppers, "drain")
                        summary = await self._account(stack, shoppers, client, engine)
                        self.reasons = list(stack.loop.reasons) if stack.loop else []
                    finally:
                        await engine.dispose()
        self._write(summary)
        return summary

    async def _account(
        self, stack: LocalStack, shoppers: Shoppers, client: httpx.AsyncClient, engine: Any
    ) -> dict[str, Any]:
        sim = stack.sim_url
        missing = await audit.missing_orders(engine, shoppers.ids)
        truth = await audit.popularity(engine)
        lines = await audit.count_lines(engine)
        analytics = (await client.get(f"{sim}/admin/state")).json()
        pop = (await client.get(f"{sim}/v1/popularity", params={"top": 100_000})).json()
        seen = {t["sku"]: float(t["qty"]) for t in pop["top"]}
        timeline = (
            await client.get(f"{sim}/admin/timeline", params={"since": self.started})
        ).json()["seconds"]
        lines_per_order = lines / shoppers.accepted if shoppers.accepted else 0.0
        return report.summarize(
            orders_accepted=shoppers.accepted,
            orders_refused=shoppers.refused,
            lost_orders=len(missing),
            lines=lines,
            analytics=analytics,
            truth=truth,
            seen=seen,
            shed=self.samples[-1]["shed"] if self.samples else {},
            samples=self.samples,
            left=await _left(stack, engine),
            phases=report.phase_rates(self.samples, timeline, lines_per_order),
        )

    def _write(self, summary: dict[str, Any]) -> None:
        out = self.options.report_dir
        out.mkdir(parents=True, exist_ok=True)
        scenario = self.options.scenario
        reasons = self.reasons
        (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
        (out / "timeline.json").write_text(
            json.dumps({"samples": self.samples, "reasons": reason_log(reasons)}, default=str)
            + "\n"
        )
        notes = [(p.name, p.note) for p in scenario.phases]
        (out / "report.html").write_text(
            report.render_html(summary, self.samples, scenario.bounds(), reasons, notes)
        )


async def _left(stack: LocalStack, engine: Any) -> dict[str, int]:
    """What has not reached analytics yet: outbox rows, stream entries, open aggregate windows."""
    assert stack.redis is not None
    with contextlib.suppress(Exception):
        shard_list = await shards.current(stack.redis)
        return {
            "outbox": await outbox.count_outbox(engine),
            "stream": (await streams.queue_stats(stack.redis, shard_list)).length,
            "windows": await quota.window_count(stack.redis, shard_list),
        }
    return {"outbox": -1, "stream": -1, "windows": -1}


def summary_text(summary: dict[str, Any], report_dir: Path) -> str:
    """The summary the demo prints at the end."""
    shed = summary["events_shed"]
    share = summary["max_queue_over_quota"]
    lines = [
        "",
        "trackrelay demo: summary",
        f"  orders accepted        {summary['orders_accepted']} "
        f"(refused {summary['orders_refused']})",
        f"  orders lost            {summary['lost_orders']}  (every accepted order read back)",
        f"  events delivered       {summary['events_delivered']} "
        f"(standing for {summary['lines_delivered']} of {summary['order_lines']} order lines)",
        f"  duplicates dropped     {summary['duplicates']} (by analytics' event-id check)",
        f"  lines shed             {shed['lost_lines']} lost, {shed['folded_lines']} folded "
        "into exact aggregates",
        f"  popularity             top-100 Jaccard {summary['popularity_top100_jaccard']}, "
        f"total off by {summary['popularity_total_error']:.2%}",
        "  queue memory           at most "
        + ("-" if share is None else f"{share:.0%} of the quota"),
        f"  budget                 {summary['budget_min_seen']:.0f} to "
        f"{summary['budget_max_seen']:.0f} ev/s; forwarders up to {summary['max_replicas']}",
        *(
            f"  {r['phase']:<22} {r['lines_arrived_per_s']:.0f} lines/s arrived, "
            f"{r['events_delivered_per_s']:.0f} events/s delivered"
            + ("" if r["budget_min"] is None else f", budget {r['budget_min']:.0f} ev/s at least")
            + (
                ""
                if r.get("backlog_start") is None
                else f", backlog {r['backlog_start']} -> {r['backlog_end']}"
            )
            for r in summary.get("phases", [])
        ),
        f"  report                 {report_dir / 'report.html'} (and summary.json)",
    ]
    return "\n".join(lines)
