"""The simulator over HTTP: duplicates, popularity, bad batches, admin switching."""

from __future__ import annotations

import random
import re
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, generate_latest

from trackrelay.analytics_sim.app import create_app, load_scenario
from trackrelay.analytics_sim.model import Capacity
from trackrelay.analytics_sim.state import SimState
from trackrelay.analytics_sim.track import SimMetrics
from trackrelay.config.settings import SimulatorSettings
from trackrelay.control.analytics_health import SIMULATOR_QUERIES


def ev(n: int, sku: str = "s", qty: int = 1, weight: float = 1.0) -> dict[str, Any]:
    return {
        "event_id": f"o{n}:0",
        "order_id": f"o{n}",
        "sku": sku,
        "qty": qty,
        "weight": weight,
        "occurred_at": "2026-01-01T00:00:00.000Z",
    }


@pytest.fixture
def sim() -> Iterator[TestClient]:
    with TestClient(create_app(SimulatorSettings())) as c:
        yield c


def test_duplicates_are_dropped_and_popularity_is_weighted(sim: TestClient) -> None:
    r = sim.post("/v1/track", json={"events": [ev(1, "a", 2), ev(2, "b", 1, weight=4.0)]})
    assert r.json() == {"accepted": 2, "duplicates": 0}
    r = sim.post("/v1/track", json={"events": [ev(1, "a", 2), ev(3, "a", 1)]})
    assert r.json() == {"accepted": 1, "duplicates": 1}
    top = sim.get("/v1/popularity", params={"top": 1}).json()["top"]
    assert top == [{"sku": "b", "qty": 4.0}]
    state = sim.get("/admin/state").json()
    assert (state["accepted"], state["duplicates"]) == (3, 1)


def test_a_bad_event_rejects_the_whole_batch(sim: TestClient) -> None:
    r = sim.post("/v1/track", json={"events": [ev(1), ev(2, qty=-3)]})
    assert r.status_code == 400
    assert r.json()["bad_events"][0]["event_id"] == "o2:0"
    assert sim.get("/admin/state").json()["accepted"] == 0
    assert sim.post("/v1/track", content=b"nope").status_code == 400


def test_admin_switches_faults_and_refuses_bad_ones(sim: TestClient) -> None:
    assert sim.post("/admin/fault", json={"mode": "down"}).json()["mode"] == "down"
    r = sim.post("/v1/track", json={"events": [ev(1)]})
    assert r.status_code == 503
    assert r.headers["retry-after"] == "1"
    bad = sim.post("/admin/fault", json={"mode": "asleep"})
    assert bad.status_code == 422
    assert "mode must be one of" in bad.json()["detail"]
    sim.post(
        "/admin/scenario", json={"phases": [{"duration": 60, "mode": "flaky", "error_rate": 1.0}]}
    )
    assert sim.post("/v1/track", json={"events": [ev(1)]}).status_code == 500
    sim.post("/admin/fault", json={"mode": "healthy"})
    assert sim.post("/v1/track", json={"events": [ev(1)]}).status_code == 200
    assert "analytics_sim_requests_total" in sim.get("/metrics").text


def test_scenario_files_in_json_or_yaml(tmp_path: Path) -> None:
    as_json = tmp_path / "s.json"
    as_json.write_text('{"phases": [{"duration": 5, "mode": "down"}]}')
    as_yaml = tmp_path / "s.yaml"
    as_yaml.write_text("repeat: true\nphases:\n  - {duration: 1, mode: slow, latency: 0.2}\n")
    assert load_scenario(str(as_json)).fault_at(1).mode.value == "down"
    assert load_scenario(str(as_yaml)).repeat
    bad = tmp_path / "bad.yaml"
    bad.write_text("phases:\n  - {mode: down}\n")
    with pytest.raises(ValueError, match=r"bad.yaml: phases\[0\].duration"):
        load_scenario(str(bad))
    with TestClient(create_app(SimulatorSettings(sim_scenario=as_json))) as sim:
        assert sim.get("/admin/state").json()["mode"] == "down"


def test_an_aggregate_counts_its_lines_and_a_refolded_one_is_a_duplicate(sim: TestClient) -> None:
    agg = ev(9, "a", 40) | {"event_id": "agg:1700000000000:a", "lines": 25}
    assert sim.post("/v1/track", json={"events": [agg, ev(1, "a", 2)]}).json()["accepted"] == 2
    assert sim.post("/v1/track", json={"events": [agg]}).json() == {"accepted": 0, "duplicates": 1}
    pop = sim.get("/v1/popularity", params={"top": 5}).json()
    assert pop["top"] == [{"sku": "a", "qty": 42.0}] and pop["total"] == 42.0
    assert sim.get("/admin/state").json()["lines"] == 26
    bad = sim.post("/v1/track", json={"events": [agg | {"event_id": "x", "lines": 0}]})
    assert bad.status_code == 400 and "lines" in bad.json()["bad_events"][0]["problem"]


def _samples(text: str) -> dict[str, float]:
    """``/metrics`` text as {series: value} (comments left out)."""
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            out[series] = float(value)
    return out


def test_metrics_are_what_a_real_analytics_service_exports(sim: TestClient) -> None:
    """Request latency (a histogram, seconds), in flight, queued work, answers by status."""
    sim.post("/admin/capacity", json={"rate": 100, "queue_limit": 20})
    assert sim.post("/v1/track", json={"events": [ev(n) for n in range(25)]}).status_code == 429
    assert sim.post("/v1/track", json={"events": [ev(n) for n in range(10)]}).status_code == 200
    seen = _samples(sim.get("/metrics").text)
    assert seen["analytics_sim_request_duration_seconds_count"] == 2
    assert seen['analytics_sim_request_duration_seconds_bucket{le="+Inf"}'] == 2
    # the accepted one waited for its own 10 events at 100 ev/s: at least 0.1 s
    assert seen['analytics_sim_request_duration_seconds_bucket{le="0.05"}'] <= 1
    assert seen["analytics_sim_request_duration_seconds_sum"] >= 0.1
    assert seen["analytics_sim_requests_in_flight"] == 0
    assert seen['analytics_sim_requests_total{status="200"}'] == 1
    assert seen['analytics_sim_requests_total{status="429"}'] == 1
    assert seen['analytics_sim_requests_total{status="503"}'] == 0  # there before any 503


def test_queued_work_is_exported_in_seconds_and_events() -> None:
    state = SimState(capacity=Capacity(rate=100), rng=random.Random(0))
    metrics = SimMetrics(CollectorRegistry(), state)
    state.capacity.busy_until = time.monotonic() + 2.0  # two seconds of work queued
    seen = _samples(generate_latest(metrics.registry).decode())
    assert 1.0 < seen["analytics_sim_queued_work_seconds"] <= 2.0
    assert 100 < seen["analytics_sim_queued_events"] <= 200
    state.capacity.busy_until = 0
    seen = _samples(generate_latest(metrics.registry).decode())
    assert seen["analytics_sim_queued_work_seconds"] == seen["analytics_sim_queued_events"] == 0


def test_the_default_prometheus_queries_ask_only_for_metrics_the_simulator_exports(
    sim: TestClient,
) -> None:
    exported = {series.split("{")[0] for series in _samples(sim.get("/metrics").text)}
    asked = {
        name for q in SIMULATOR_QUERIES for name in re.findall(r"\banalytics_sim_[a-z_]+", q.promql)
    }
    assert asked and asked <= exported, asked - exported


def test_the_timeline_gives_each_accepted_request_its_idle_time() -> None:
    app = create_app(SimulatorSettings(sim_rate=1000))
    with TestClient(app) as sim:
        assert sim.post("/v1/track", json={"events": [ev(1)]}).status_code == 200
        # A second of work queued before the next request: it waits, its idle time does not.
        app.state.sim.capacity.busy_until = time.monotonic() + 1.0
        assert sim.post("/v1/track", json={"events": [ev(2)]}).status_code == 200
        seconds = sim.get("/admin/timeline", params={"raw": "true"}).json()["seconds"]
    (alone_took, alone_idle), (took, idle) = [pair for s in seconds for pair in s["served"]]
    assert alone_took == alone_idle  # nothing queued before it
    assert 0.5 < took - idle <= 1.0
    assert 0 < idle < 0.5


def test_another_client_is_set_through_the_capacity_route(sim: TestClient) -> None:
    state = sim.post("/admin/capacity", json={"rate": 100, "other_client": 40}).json()
    assert state["capacity"]["other_client"] == 40
    assert set(state["other_client"]) == {"served", "refused"}
    bad = sim.post("/admin/capacity", json={"other_client": "lots"})
    assert bad.status_code == 422 and "other_client" in bad.json()["detail"]


def test_the_timeline_gives_each_new_event_its_freshness_from_occurred_at() -> None:
    from trackrelay.events import rfc3339

    app = create_app(SimulatorSettings(sim_rate=1000))
    with TestClient(app) as sim:
        moment = datetime.now(UTC) - timedelta(seconds=2)
        old, fresh = ev(1), ev(2)
        old["occurred_at"] = rfc3339(moment)
        fresh["occurred_at"] = rfc3339(datetime.now(UTC))
        assert sim.post("/v1/track", json={"events": [old, fresh]}).status_code == 200
        # a duplicate is not counted again, so it says nothing of freshness
        assert sim.post("/v1/track", json={"events": [old]}).status_code == 200
        seconds = sim.get("/admin/timeline", params={"raw": "true"}).json()["seconds"]
        ages = sorted(a for s in seconds for a in s["freshness"])
        assert len(ages) == 2
        assert 0 <= ages[0] < 1.0 and 2.0 <= ages[1] < 3.0
        assert max(s["freshness_p99"] or 0 for s in seconds) == ages[1]
        exported = _samples(sim.get("/metrics").text)
        assert exported["analytics_sim_event_freshness_seconds_count"] == 2
        assert exported['analytics_sim_event_freshness_seconds_bucket{le="1.0"}'] == 1
