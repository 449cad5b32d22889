"""A shortened ``trackrelay demo``: its summary holds, and its report renders in Chromium."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.prerequisites import CHROMIUM


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the demo once, as a user would, with plain lines: its report directory."""
    work = tmp_path_factory.mktemp("demo")
    out = work / "report"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "trackrelay.cli",
            "demo",
            "--no-live",
            "--duration",
            "45",
            "--report-dir",
            str(out),
            "--data-dir",
            str(work / "data"),
        ],
        cwd=work,
        capture_output=True,
        text=True,
        timeout=240,
        env={k: v for k, v in os.environ.items() if not k.startswith("TRACKRELAY_")},
    )
    (work / "demo.log").write_text(proc.stdout + proc.stderr)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "trackrelay demo: summary" in proc.stdout
    return out


def timeline(out: Path) -> list[dict[str, Any]]:
    samples: list[dict[str, Any]] = json.loads((out / "timeline.json").read_text())["samples"]
    return samples


def test_the_summary_shows_nothing_lost_and_the_queue_within_quota(demo_run: Path) -> None:
    summary = json.loads((demo_run / "summary.json").read_text())
    for key in (
        "lost_orders",
        "orders_accepted",
        "events_delivered",
        "events_shed",
        "duplicates",
        "popularity_top100_jaccard",
        "max_queue_over_quota",
    ):
        assert key in summary
    assert summary["lost_orders"] == 0
    assert summary["orders_accepted"] > 500
    assert summary["events_delivered"] > 0
    assert summary["max_queue_over_quota"] <= 1.0
    assert summary["replicas_over_usable"] == 0
    assert summary["popularity_top100_jaccard"] >= 0.9
    assert summary["left_undelivered"] == {"outbox": 0, "stream": 0, "windows": 0}
    # Every order line reached analytics, as an event or inside an exact aggregate.
    lost = summary["events_shed"]["lost_lines"]
    assert summary["lines_delivered"] + lost == summary["order_lines"]


def test_the_budget_holds_for_a_slow_analytics_falls_for_a_sick_one_and_rises_after(
    demo_run: Path,
) -> None:
    samples = [s for s in timeline(demo_run) if s["budget"] is not None]
    first = samples[0]["budget"]
    # 1.2 s a push whatever our rate is not congestion: one experimental cut at most
    # (undone once a tick shows the latency did not fall), never one per tick.
    slow = [s["wall"] for s in samples if s["phase"] == "analytics slow"]
    reasons = json.loads((demo_run / "timeline.json").read_text())["reasons"]
    cuts = [r for r in reasons if r["kind"] == "budget-cut" and slow[0] <= r["at"] <= slow[-1]]
    assert len(cuts) <= 1, cuts
    sick = [
        s["budget"] for s in samples if s["phase"] in ("timeouts", "overloaded", "quota pressure")
    ]
    assert min(sick) < first / 4  # timeouts, 429s and 503s are congestion
    after = [s["budget"] for s in samples if s["phase"] in ("recovery", "drain")]
    assert max(after) >= 4 * min(sick)
    summary = json.loads((demo_run / "summary.json").read_text())
    phases = {p["phase"]: p for p in summary["phases"]}
    assert phases["analytics slow"]["events_delivered_per_s"] > 0
    assert phases["healthy"]["lines_arrived_per_s"] > 0


def test_replicas_never_exceed_what_the_budget_can_use(demo_run: Path) -> None:
    for s in timeline(demo_run):
        if s["decided"] is not None:
            assert s["decided"] <= s["usable"], s


@pytest.mark.needs("chromium")
def test_the_report_loads_in_chromium_without_errors_and_its_plots_render(
    demo_run: Path,
) -> None:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1000, "height": 900})
            problems: list[str] = []
            page.on(
                "console",
                lambda m: problems.append(m.text) if m.type in ("error", "warning") else None,
            )
            page.on("pageerror", lambda e: problems.append(str(e)))
            page.on("requestfailed", lambda r: problems.append(f"failed: {r.url}"))
            page.goto((demo_run / "report.html").as_uri())
            assert problems == []
            charts = page.locator("svg.chart")
            assert charts.count() == 8
            for i in range(charts.count()):
                box = charts.nth(i).bounding_box()
                assert box is not None and box["width"] > 500 and box["height"] > 150
                lines = charts.nth(i).locator("polyline.series")
                assert lines.count() >= 1
                drawn = lines.first.bounding_box()
                assert drawn is not None and drawn["width"] > 100  # a line across time
            assert "0 orders lost" in page.locator("p.ok").inner_text()
            page.screenshot(path=str(demo_run / "report.png"), full_page=True)
        finally:
            browser.close()
