"""The whole stack on one machine, supervised and controlled: what ``up`` and ``demo`` run.

- the queue: an embedded Redis (AOF on) unless a URL is given;
- analytics: the built-in simulator (with a journal, so its counts survive a
  restart) unless a URL is given;
- the relay, in a process of its own;
- forwarders, as many as the controller decides;
- the order API, served in this process;
- the supervisor, which reaps and restarts every child that dies;
- the controller (``ControlLoop``) in local mode: it observes Redis, decides,
  writes the budget and shedding policy to Redis (the live configuration the
  forwarders and relay read) and starts or stops forwarder processes;
- ``status.json`` in the data directory, rewritten every tick, which
  ``trackrelay status`` prints.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from trackrelay.config.settings import (
    ControllerSettings,
    ForwarderSettings,
    OrderSettings,
    read_ahead,
)
from trackrelay.control.controller import Decision, Observation, Spec, initial_state
from trackrelay.control.shedding import live_form
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.live import human_size
from trackrelay.local.processes import spawn_role, wait_http
from trackrelay.local.runner import prepare_store, redis_maxmemory, settings_env
from trackrelay.local.supervisor import Supervisor
from trackrelay.loop.observe import observe
from trackrelay.loop.shell import ControlLoop
from trackrelay.orders.app import create_app
from trackrelay.queue import client, rate_budget
from trackrelay.queue.client import Queue
from trackrelay.queue.shedding import set_shedding
from trackrelay.runtime.ports import free_port
from trackrelay.runtime.redact import redact_url
from trackrelay.runtime.serve import QuietServer, make_server

log = logging.getLogger(__name__)

STATUS_FILE = "status.json"
FORWARDER = "forwarder-"


@dataclass
class StackOptions:
    settings: OrderSettings
    control: ControllerSettings = field(default_factory=ControllerSettings)
    analytics_url: str | None = None
    forwarders: int = 2
    """Forwarders at start (the controller changes the count within its bounds)."""
    forwarder_env: dict[str, str] = field(default_factory=dict)
    """Extra ``TRACKRELAY_*`` settings for every forwarder (the demo's smaller batches)."""
    sim_args: list[str] = field(default_factory=list)
    quiet: bool = False
    """No start-up lines (the demo draws its own view)."""


class LocalStack:
    """Start with ``async with LocalStack(options) as stack``; everything stops on exit."""

    def __init__(self, options: StackOptions) -> None:
        self.options = options
        settings = options.settings
        self.spec: Spec = options.control.spec(settings)
        self.prometheus = options.control.prometheus_spec()
        self.data_dir = settings.data_dir
        self.logs = settings.data_dir / "logs"
        self.supervisor = Supervisor()
        self.redis_url = settings.redis_url or ""
        self.redis: Queue | None = None
        self.sim_url: str | None = None
        self.analytics_url = options.analytics_url
        self.api = f"http://{settings.host}:{settings.port}"
        self.loop: ControlLoop | None = None
        self.stop = asyncio.Event()
        self._ports: dict[int, int] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._client: httpx.AsyncClient | None = None
        self._forwarder_env: dict[str, str] = {}

    def say(self, text: str) -> None:
        if not self.options.quiet:
            print(f"trackrelay up: {text}", flush=True)

    # -- start and stop ---------------------------------------------------------------

    async def __aenter__(self) -> LocalStack:
        try:
            await self._start()
        except BaseException:
            await self._shutdown()
            raise
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._shutdown()

    async def _start(self) -> None:
        opts = self.options
        settings = opts.settings
        self.logs.mkdir(parents=True, exist_ok=True)
        if "queue_read_ahead" not in settings.model_fields_set:
            # What the forwarders can hold at once: room the quota keeps for them.
            fwd = ForwarderSettings.model_validate(_unprefixed(opts.forwarder_env))
            most = max(opts.forwarders, opts.control.replicas_max if opts.control.enabled else 0)
            settings = settings.model_copy(
                update={"queue_read_ahead": read_ahead(most, fwd.concurrency, fwd.batch_size)}
            )
        if settings.redis_url is None:
            server = EmbeddedRedis(
                settings.data_dir / "redis", maxmemory=redis_maxmemory(settings.queue_quota)
            )
            self.supervisor.start("redis", lambda: _started(server))
            self.redis_url = server.url
        ready = await prepare_store(settings, self.redis_url)
        self.redis = client.connect(self.redis_url, timeout=2)
        if self.analytics_url is None:
            port = free_port()
            self.sim_url = self.analytics_url = f"http://127.0.0.1:{port}"
            args = ["analytics-sim", "--port", str(port), *opts.sim_args]
            args += ["--journal", str(self.data_dir / "analytics-sim.journal")]
            child = self.supervisor.start(
                "analytics-sim", lambda: spawn_role(args, {}, self.logs / "analytics-sim.log")
            )
            await asyncio.to_thread(wait_http, f"{self.sim_url}/healthz", 30, child.process)
            self.say(
                f"analytics  {self.sim_url} (built-in simulator; popularity at "
                f"{self.sim_url}/v1/popularity)"
            )
        else:
            self.say(f"analytics  {redact_url(self.analytics_url)}")
        relay_env = settings_env(ready, self.redis_url)
        self.supervisor.start(
            "relay",
            lambda: spawn_role(["relay", "--no-migrate"], relay_env, self.logs / "relay.log"),
        )
        self._forwarder_env = {
            "TRACKRELAY_REDIS_URL": self.redis_url,
            "TRACKRELAY_ANALYTICS_URL": self.analytics_url,
            "TRACKRELAY_QUEUE_SHARDS": str(ready.queue_shards),  # every shard from the start
            **opts.forwarder_env,
        }
        for n in range(opts.forwarders):
            self._start_forwarder(n)
        if opts.control.enabled:
            await rate_budget.set_budget(self.redis, self.spec.budget_initial)
            self._client = httpx.AsyncClient(timeout=2)
            self.loop = ControlLoop(
                self.spec,
                self._observe,
                self._act,
                opts.control.interval,
                state=initial_state(self.spec, replicas=opts.forwarders),
            )
        app = create_app(ready.model_copy(update={"run_relay": False}), redis_url=None)
        api = make_server(app, settings.host, settings.port, "warning")
        self._tasks.append(asyncio.create_task(self._serve(api), name="order-api"))
        await asyncio.to_thread(wait_http, f"{self.api}/readyz", 60)
        self._tasks.append(asyncio.create_task(self.supervisor.run(self.stop), name="supervisor"))
        self._tasks.append(asyncio.create_task(self._control(), name="controller"))
        self.say(
            f"order API  {self.api}/v1/orders  (docs {self.api}/docs, metrics {self.api}/metrics)"
        )
        self.say(f"queue      {redact_url(self.redis_url)}")
        self.say(f"store      {redact_url(settings.resolved_database_url())}")
        if settings.queue_quota is not None or settings.outbox_quota is not None:
            queue = human_size(settings.queue_quota) if settings.queue_quota else "none"
            rows = f"{settings.outbox_quota} rows" if settings.outbox_quota else "no limit"
            if settings.outbox_quota_derived:
                rows += " (derived from the queue quota; --outbox-quota to set it)"
            self.say(f"quota      queue {queue}, outbox {rows}, shedding {settings.shedding}")
        if self.loop is not None:
            s = self.spec
            self.say(
                f"controller budget {s.budget_initial:g} ev/s in [{s.budget_min:g}, "
                f"{s.budget_max:g}], forwarders {opts.forwarders} in [{s.replicas_min}, "
                f"{s.replicas_max}], p99 target {s.p99_target:g} s"
            )
            if self.prometheus is not None:
                p = self.prometheus
                self.say(
                    f"prometheus {redact_url(p.address)}: "
                    + ", ".join(f"{q.name} in {q.range_text()}" for q in p.queries)
                    + f" (timeout {p.timeout:g} s, unknown holds {p.staleness:g} s)"
                )
        self.say(f"status     trackrelay status --data-dir {self.data_dir}")
        self.say(f"logs       {self.logs}/  (Ctrl-C stops everything)")

    async def _serve(self, server: QuietServer) -> None:
        serving = asyncio.create_task(server.serve())
        stopping = asyncio.create_task(self.stop.wait())
        await asyncio.wait({serving, stopping}, return_when=asyncio.FIRST_COMPLETED)
        server.should_exit = True
        stopping.cancel()
        with contextlib.suppress(SystemExit):
            await serving
        if not server.started and not self.stop.is_set():
            self.stop.set()
            raise RuntimeError(f"could not serve the order API at {self.api} (port taken?)")

    async def _shutdown(self) -> None:
        self.stop.set()
        for task in self._tasks:
            with contextlib.suppress(Exception):
                await task
        self._tasks.clear()
        await asyncio.to_thread(self.supervisor.stop_all, ("redis",))
        if (self.data_dir / STATUS_FILE).exists():
            self.write_status(stopped=True)
        if self._client is not None:
            await self._client.aclose()
        if self.redis is not None:
            await self.redis.aclose()

    # -- forwarders -------------------------------------------------------------------

    def _start_forwarder(self, n: int) -> None:
        port = self._ports.setdefault(n, free_port())
        env = {
            **self._forwarder_env,
            "TRACKRELAY_METRICS_PORT": str(port),
            "TRACKRELAY_CONSUMER_NAME": f"local-forwarder-{n}",
        }
        log_path = self.logs / f"forwarder-{n}.log"
        self.supervisor.start(f"{FORWARDER}{n}", lambda: spawn_role(["forwarder"], env, log_path))
        self.say(f"forwarder  #{n} metrics http://127.0.0.1:{port}/metrics")

    def forwarder_count(self) -> int:
        return len(self.supervisor.names(FORWARDER))

    async def scale(self, replicas: int) -> None:
        """Start or stop forwarder processes: the lowest numbers run, the highest stop first."""
        running = sorted(int(n[len(FORWARDER) :]) for n in self.supervisor.names(FORWARDER))
        for n in range(replicas):
            if n not in running:
                await asyncio.to_thread(self._start_forwarder, n)
        for n in running:
            if n >= replicas:
                self.supervisor.retire(f"{FORWARDER}{n}")

    # -- the controller's observe and act -----------------------------------------------

    async def _observe(self) -> Observation:
        assert self.redis is not None
        return await observe(
            self.redis,
            self.options.settings.queue_quota,
            self.options.control.health_url,
            self._client,
            self.prometheus,
        )

    async def _act(self, decision: Decision) -> None:
        assert self.redis is not None
        await rate_budget.set_budget(self.redis, decision.budget)
        await set_shedding(self.redis, live_form(decision.shedding))
        await self.scale(decision.replicas)

    async def _control(self) -> None:
        while not self.stop.is_set():
            if self.loop is not None:
                await self.loop.tick()
            self.write_status()
            interval = self.loop.interval if self.loop is not None else 1.0
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stop.wait(), timeout=interval)

    def status(self) -> dict[str, Any]:
        out: dict[str, Any] = self.loop.status() if self.loop is not None else {"at": time.time()}
        out |= {
            "pid": os.getpid(),
            "api": self.api,
            "queue": redact_url(self.redis_url),
            "analytics": redact_url(self.analytics_url) if self.analytics_url else None,
            "forwarders": self.forwarder_count(),
            "children": self.supervisor.status(),
            "restarts": self.supervisor.restarts(),
            "supervisor": self.supervisor.events[-5:],
        }
        return out

    def write_status(self, stopped: bool = False) -> None:
        path = self.data_dir / STATUS_FILE
        tmp = path.with_suffix(".tmp")
        data = self.status() | {"stopped": stopped}
        tmp.write_text(json.dumps(data, indent=1, default=str))
        tmp.replace(path)


def _started(server: EmbeddedRedis) -> subprocess.Popen[bytes]:
    """Start (or restart, reloading its AOF) the embedded Redis; its process."""
    server.start(timeout=30)
    assert server.process is not None
    return server.process


def _unprefixed(env: dict[str, str]) -> dict[str, str]:
    return {k.removeprefix("TRACKRELAY_").lower(): v for k, v in env.items()}


def read_status(data_dir: Path) -> dict[str, Any]:
    """The status ``up`` last wrote; ``FileNotFoundError`` when it never ran here."""
    data: dict[str, Any] = json.loads((data_dir / STATUS_FILE).read_text())
    return data
