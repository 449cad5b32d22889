"""Analytics' health from its own metrics: a real Prometheus scraping the simulator.

The simulator exports what a real analytics service would (request latency, in
flight, queued work, answers by status); Prometheus scrapes it every 0.5 s; the
controller's reader (``loop.prometheus``) asks the simulator's default queries.
Every wait polls until the verdict comes, with traffic kept going meanwhile, so
no test depends on how fast this machine is.
"""

from __future__ import annotations

import asyncio
import json
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.integration.conftest import Sim, run_cli, wait_for
from tests.support.prometheus import PrometheusServer
from tests.support.traffic import Traffic
from trackrelay.control.analytics_health import (
    HealthQuery,
    PrometheusSpec,
    Signal,
    Verdict,
)
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.loop import prometheus
from trackrelay.runtime.ports import free_port

pytestmark = pytest.mark.needs("prometheus")

WAIT = 90.0
"""Seconds a verdict may take to come (a scrape, a rate window filling): generous."""


@dataclass
class Rig:
    sim: Sim
    prom: PrometheusServer

    @property
    def spec(self) -> PrometheusSpec:
        return PrometheusSpec(self.prom.url)  # the simulator's default queries


@pytest.fixture
def rig(start_sim: Callable[..., Sim], tmp_path: Path) -> Iterator[Rig]:
    sim = start_sim()
    target = sim.url.removeprefix("http://")
    with PrometheusServer(tmp_path / "prometheus", [target], interval=0.5) as prom:
        prom.wait_up()
        yield Rig(sim, prom)


async def verdict_until(
    spec: PrometheusSpec, wanted: Callable[[Verdict], bool], what: str, timeout: float = WAIT
) -> Verdict:
    """Ask Prometheus until the verdict is ``wanted``; fail with the last one seen."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    seen: list[Verdict] = []
    async with httpx.AsyncClient() as client:
        while True:
            v = await prometheus.check(client, spec)
            seen.append(v)
            if wanted(v):
                return v
            if loop.time() > deadline:
                raise AssertionError(f"timed out after {timeout}s waiting for {what}: {seen[-3:]}")
            await asyncio.sleep(0.25)


async def test_a_healthy_simulator_reads_healthy_and_a_slow_one_unhealthy_by_its_latency(
    rig: Rig,
) -> None:
    with Traffic(rig.sim.url):
        v = await verdict_until(rig.spec, lambda v: v.state is Signal.HEALTHY, "healthy")
        assert v.query is None
        for name in ("analytics_p99", "analytics_error_share", "analytics_queued_seconds"):
            assert f"{name} " in v.why and " within [0, " in v.why
        rig.sim.fault(mode="slow", latency=1.0)  # 1 s per request, whatever the load

        def latency_decided(v: Verdict) -> bool:
            return v.state is Signal.UNHEALTHY and v.query == "analytics_p99"

        v = await verdict_until(rig.spec, latency_decided, "unhealthy by the p99 query")
    value = float(v.why.split()[1])
    assert value > 0.5 and v.why == f"analytics_p99 {v.why.split()[1]} outside [0, 0.5]"
    assert v.staleness == rig.spec.staleness


async def test_an_overloaded_simulator_reads_unhealthy_by_its_429s(rig: Rig) -> None:
    rig.sim.call("/admin/capacity", {"rate": 100, "queue_limit": 100})
    with Traffic(rig.sim.url, threads=6, events=40):  # 6 x 40 events at once: 429s
        v = await verdict_until(
            rig.spec,
            lambda v: v.state is Signal.UNHEALTHY and "analytics_error_share " in v.why,
            "unhealthy by the 429 share",
        )
    share = v.why.split("analytics_error_share ")[1].split()[0]
    assert float(share) > 0.05
    assert rig.sim.state()["requests"].get("429", 0) > 0


async def test_prometheus_stopped_frozen_or_refusing_reads_unknown_never_healthy(
    rig: Rig,
) -> None:
    await verdict_until(rig.spec, lambda v: v.state is Signal.HEALTHY, "healthy first")
    # A query Prometheus refuses, and one over a metric nobody exports.
    spec = PrometheusSpec(
        rig.prom.url,
        (
            HealthQuery("typo", "sum(rate(analytics_sim_requests_total[1m]", 0, 1),
            HealthQuery("absent", "analytics_sim_no_such_metric", 0, 1),
        ),
    )
    async with httpx.AsyncClient() as client:
        v = await prometheus.check(client, spec)
    assert v.state is Signal.UNKNOWN and v.query == "typo"
    assert "typo: Prometheus answered 400: bad_data:" in v.why
    assert "absent: no data" in v.why
    # Frozen: it accepts connections and answers nothing; each query times out.
    rig.prom.freeze()
    try:
        v = await verdict_until(rig.spec, lambda v: v.state is not Signal.HEALTHY, "unknown")
        assert v.state is Signal.UNKNOWN and v.query == "analytics_p99"
        assert "analytics_p99: Prometheus did not answer within 1 s" in v.why
    finally:
        rig.prom.thaw()
    await verdict_until(rig.spec, lambda v: v.state is Signal.HEALTHY, "healthy when thawed")
    # Stopped: refused connections.
    rig.prom.stop()
    async with httpx.AsyncClient() as client:
        v = await prometheus.check(client, rig.spec)
    assert v.state is Signal.UNKNOWN and v.query == "analytics_p99"
    assert v.why.count("Prometheus unreachable (ConnectError)") == 3


def test_up_reads_analytics_health_from_prometheus_and_status_shows_it(
    rig: Rig, tmp_path: Path
) -> None:
    port = free_port()
    data = tmp_path / "data"
    log = tmp_path / "up.log"
    up = spawn_role(
        [
            "up",
            "--analytics-url",
            rig.sim.url,
            "--prometheus-url",
            rig.prom.url,
            "--port",
            str(port),
            "--data-dir",
            str(data),
        ],
        {},
        log,
    )

    def status() -> str:
        done = run_cli(["status", "--data-dir", str(data)], {})
        return done.stdout

    def line(state: str) -> Callable[[], bool]:
        return lambda: any(t.startswith(f"  prometheus   {state}") for t in status().splitlines())

    def shown() -> str:
        return next((t for t in status().splitlines() if "prometheus" in t), "no line")

    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 60, up)
        started = f"trackrelay up: prometheus {rig.prom.url}: analytics_p99 in [0, 0.5], "
        wait_for(lambda: started in log.read_text(), 30, "the start-up line", log.read_text)
        wait_for(line("healthy: analytics_p99 "), WAIT, "status says healthy", shown)
        rig.sim.fault(mode="slow", latency=1.0)
        with Traffic(rig.sim.url):
            wait_for(
                line("unhealthy (query analytics_p99): analytics_p99 "),
                WAIT,
                "status names the latency query",
                shown,
            )
        assert "outside [0, 0.5]" in shown()
        rig.prom.stop()
        wait_for(
            line("unknown (query analytics_p99): analytics_p99: Prometheus unreachable"),
            WAIT,
            "status says unknown when Prometheus is gone",
            shown,
        )

        def controller_unknown() -> bool:  # the controller reads the verdict and says so
            gone = "analytics_p99: Prometheus unreachable"
            lines = status().splitlines()
            return any(t.startswith("  analytics    unknown") and gone in t for t in lines)

        wait_for(controller_unknown, WAIT, "the decision says the metrics are unknown", status)
        verdict = json.loads(run_cli(["status", "--data-dir", str(data), "--json"], {}).stdout)
        assert verdict["observation"]["analytics"]["state"] == "unknown"
        up.send_signal(signal.SIGINT)
        assert up.wait(30) == 0
    finally:
        stop_all([up])
