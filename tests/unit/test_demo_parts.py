"""The demo's pure parts: scenarios, the summary, the report's charts, the status text."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, cast

import pytest

from trackrelay.control.controller import Reason, ReasonKind
from trackrelay.local import report, scenario
from trackrelay.local.demo import DRAIN_CAP, Drain
from trackrelay.local.up import controller_parts, format_status


def test_the_default_story_has_the_six_phases_in_order_and_scales() -> None:
    names = [p.name for p in scenario.DEFAULT.phases]
    assert names == [
        "healthy",
        "analytics slow",
        "timeouts",
        "overloaded",
        "quota pressure",
        "recovery",
    ]
    short = scenario.DEFAULT.scaled(60)
    assert short.seconds == pytest.approx(60)
    assert short.at(0)[1].name == "healthy"
    assert short.at(59.9)[1].name == "recovery"
    assert [b[0] for b in short.bounds()] == names


def test_a_scenario_file_is_checked_field_by_field(tmp_path: Path) -> None:
    good = {"phases": [{"name": "calm", "seconds": 5, "load": 10}]}
    path = tmp_path / "s.json"
    path.write_text(json.dumps(good))
    assert scenario.load(path).phases[0].fault == {"mode": "healthy"}
    cases = [
        ({"phases": []}, "at least one phase"),
        ({"phases": [{"seconds": 0, "load": 1}]}, "phases[0].seconds: must be a number > 0"),
        ({"phases": [{"seconds": 1, "load": 1, "fault": {"mode": "on fire"}}]}, "phases[0].fault"),
        ({"phases": [{"seconds": 1, "load": 1, "speed": 3}]}, "unknown field(s) speed"),
        ([], '"phases" list'),
    ]
    for data, message in cases:
        with pytest.raises(ValueError, match=re.escape(message)):
            scenario.parse(data)
    path.write_text("{not json")
    with pytest.raises(ValueError, match="not JSON"):
        scenario.load(path)


def sample(t: float, **kw: object) -> dict[str, object]:
    base: dict[str, object] = {
        "t": t,
        "wall": 1000 + t,
        "phase": "healthy",
        "orders_per_s": 40.0,
        "order_p99": 0.008,
        "analytics_p99": 0.05,
        "p99_target": 0.5,
        "budget": 400.0,
        "delivered": 80.0,
        "replicas": 1,
        "usable": 2,
        "backlog": 10,
        "queue_bytes": 1000,
        "quota": 10_000,
        "queue_share": 0.1,
        "shed_folded": 0,
        "shed_lost": 0,
    }
    base.update(kw)
    return base


def test_the_summary_counts_losses_shedding_and_accuracy() -> None:
    samples = [sample(0), sample(1, queue_share=0.93, budget=10.0, decided=3, usable=2)]
    s = report.summarize(
        orders_accepted=100,
        orders_refused=0,
        lost_orders=0,
        lines=200,
        analytics={"accepted": 150, "lines": 190, "duplicates": 3},
        truth={"a": 120.0, "b": 80.0},
        seen={"a": 118.0, "b": 72.0},
        shed={"stream:aggregate:folded": 40, "stream:evict:evicted": 10},
        samples=samples,
        left={"outbox": 0, "stream": 0, "windows": 0},
    )
    assert s["lost_orders"] == 0 and s["events_delivered"] == 150 and s["duplicates"] == 3
    assert s["events_shed"]["lost_lines"] == 10 and s["events_shed"]["folded_lines"] == 40
    assert s["popularity_top100_jaccard"] == 1.0
    assert s["popularity_total_error"] == pytest.approx(0.05)
    assert s["max_queue_over_quota"] == 0.93
    assert (s["budget_min_seen"], s["budget_max_seen"]) == (10.0, 400.0)
    assert s["replicas_over_usable"] == 1


def test_jaccard_of_the_top_lists() -> None:
    truth = {f"s{i}": float(200 - i) for i in range(150)}
    assert report.jaccard_top(truth, truth) == 1.0
    shifted = {f"s{i}": float(200 - i) for i in range(50, 200)}
    assert report.jaccard_top(truth, shifted) == pytest.approx(50 / 150)


def test_a_chart_draws_each_series_and_breaks_at_gaps() -> None:
    svg = report.svg_chart(
        "budget",
        [0, 1, 2, 3],
        [("budget", [1.0, None, 3.0, 4.0]), ("delivered", [1.0, 2.0, 2.0, 2.0])],
        [("healthy", 0, 2), ("slow", 2, 4)],
    )
    assert svg.count("<polyline") == 3  # budget in two runs around the gap, delivered in one
    assert svg.count('fill="#f4f8fb"') == 1 and svg.count('fill="#fdf3e7"') == 1
    assert ">healthy</text>" in svg and ">slow</text>" in svg


def test_the_report_is_one_document_with_every_plot_and_the_log() -> None:
    summary = report.summarize(
        orders_accepted=1,
        orders_refused=0,
        lost_orders=0,
        lines=1,
        analytics={"accepted": 1, "lines": 1},
        truth={"a": 1.0},
        seen={"a": 1.0},
        shed={},
        samples=[sample(0), sample(1)],
        left={},
    )
    page = report.render_html(
        summary,
        [sample(0), sample(1)],
        [("healthy", 0, 2)],
        [(1000.5, Reason(ReasonKind.BUDGET_RAISED, "budget 400 -> 600 ev/s"))],
    )
    assert page.startswith("<!doctype html>")
    assert page.count("<svg") == 8
    assert "0.5 s</td><td>budget 400 -&gt; 600 ev/s" in page.replace("   ", "")
    for fetches in ("src=", "href=", "<link", "<script", "url("):  # self-contained
        assert fetches not in page


STATUS = {
    "at": 1000.0,
    "pid": 42,
    "api": "http://127.0.0.1:8000",
    "forwarders": 2,
    "restarts": 1,
    "decision": {
        "budget": 400.0,
        "replicas": 2,
        "usable_replicas": 3,
        "per_replica": 150.0,
        "shedding": "aggregate",
        "policy": "aggregate",
        "p": 1.0,
        "healthy": False,
        "health": "analytics p99 1.2 s > 500 ms",
        "backlog": 900,
        "held": False,
    },
    "observation": {
        "lag": 800,
        "pending": 100,
        "queue_bytes": 500,
        "queue_quota": 1000,
        "outbox_rows": 30,
        "outbox_quota": 200,
        "forwarders": [
            {
                "name": "local-forwarder-0",
                "pushes": 10,
                "latency_p99": 1.2,
                "errors": 0,
                "throttled": 0,
                "breaker": "closed",
                "events_per_second": 50.0,
            }
        ],
    },
    "children": {
        "redis": {"pid": 7, "running": True, "restarts": 1, "up_seconds": 12.0, "last_exit": -9}
    },
    "reasons": [
        {
            "at": 999.0,
            "kind": "budget-cut",
            "text": "budget 800 -> 400 ev/s: analytics p99 1.2 s > 500 ms",
        }
    ],
}


def test_status_text_shows_decision_observation_processes_and_reasons() -> None:
    text = format_status(STATUS, now=1001.0)
    assert "budget       400 events/s" in text
    assert "forwarders   2 decided, 2 running (the budget can use 3 at 150 ev/s each)" in text
    assert "analytics    unhealthy: analytics p99 1.2 s > 500 ms" in text
    assert "queue memory 500 of 1000 bytes (50%)" in text
    assert "outbox       30 of 200 rows (15%)" in text
    assert "local-forwarder-0: 50 ev/s, p99 1200 ms" in text
    assert "redis            pid 7, up 12 s, 1 restarts" in text
    assert "budget 800 -> 400 ev/s" in text
    assert "old" not in text
    assert "(this status is 100 s old)" in format_status(STATUS, now=1100.0)
    parts = controller_parts(STATUS)
    assert parts[0] == "budget 400 ev/s, forwarders 2/3 usable, analytics unhealthy"
    assert parts[1] == "restarts 1"


def test_the_drain_waits_while_the_backlog_shrinks_and_stops_when_it_stalls() -> None:
    drain = Drain(patience=10, started=0)
    assert drain.waiting(100, 0) and drain.waiting(90, 9) and drain.waiting(80, 18)
    assert drain.waiting(80, 27)  # 9 s without progress: still within patience
    assert not drain.waiting(80, 28)  # 10 s without progress: stalled
    assert not Drain(patience=10, started=0).waiting(0, 1)  # empty: done


def test_the_drain_never_waits_past_its_cap() -> None:
    drain = Drain(patience=10, started=0)
    left = 1000
    for now in range(0, 100):
        left -= 1
        if not drain.waiting(left, now):
            break
    assert now == DRAIN_CAP * 10


def test_status_reads_the_reasons_an_earlier_up_wrote_as_pairs() -> None:
    earlier = {**STATUS, "reasons": [[999.0, "budget 800 -> 400 ev/s: analytics p99 1.2 s"]]}
    assert "budget 800 -> 400 ev/s" in format_status(earlier, now=1001.0)
    assert controller_parts(earlier)[-1].startswith("last: budget 800 -> 400")


def test_status_shows_what_analytics_metrics_say_and_the_query_that_decided() -> None:
    verdict = {
        "state": "unhealthy",
        "why": "analytics_p99 1.8 outside [0, 0.5]",
        "query": "analytics_p99",
        "at": 1000.0,
        "staleness": 30.0,
    }
    observed = {**cast(dict[str, Any], STATUS["observation"]), "analytics": verdict}
    status = {**STATUS, "observation": observed}
    text = format_status(status, now=1001.0)
    assert "  prometheus   unhealthy (query analytics_p99): analytics_p99 1.8 outside [0, 0.5]" in (
        text.splitlines()
    )
    assert "prometheus unhealthy (analytics_p99)" in controller_parts(status)
    healthy = {**verdict, "state": "healthy", "query": None, "why": "analytics_p99 0.1 within"}
    observed["analytics"] = healthy
    assert "  prometheus   healthy: analytics_p99 0.1 within" in format_status(status, now=1001.0)
    assert "prometheus" not in format_status(STATUS, now=1001.0)  # none configured


def test_each_phase_reports_what_arrived_and_what_analytics_took() -> None:
    samples = [
        {"wall": 100.0 + t, "phase": "healthy" if t < 10 else "analytics slow",
         "orders_accepted": 40 * t, "budget": 400.0 + t, "backlog": 5 * t}
        for t in range(20)
    ]  # fmt: skip
    timeline = [{"t": 100 + t, "accepted": 80 if t < 10 else 78} for t in range(20)]
    rates = report.phase_rates(samples, timeline, lines_per_order=2.0)
    assert [r["phase"] for r in rates] == ["healthy", "analytics slow"]
    slow = rates[1]
    assert slow["lines_arrived_per_s"] == 80.0  # 40 orders/s of 2 lines
    assert slow["events_delivered_per_s"] == 78.0
    assert (slow["budget_min"], slow["budget_max"]) == (410.0, 419.0)
    assert (slow["backlog_start"], slow["backlog_end"]) == (50, 95)
