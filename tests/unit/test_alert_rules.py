"""The chart's alerts (charts/trackrelay/files/prometheus-rules.yaml) under promtool.

``promtool check rules`` validates the file; ``promtool test rules`` runs
tests/promtool/trackrelay-rules.test.yaml: each alert fires on the series that
should raise it, after its ``for``, and not on healthy series. promtool comes
from Debian's ``prometheus`` package (``.ci/run`` installs it).
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "charts" / "trackrelay" / "files" / "prometheus-rules.yaml"
TESTS = REPO / "tests" / "promtool" / "trackrelay-rules.test.yaml"
PROMTOOL = shutil.which("promtool")

pytestmark = pytest.mark.needs("promtool")


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], capture_output=True, text=True, timeout=60, cwd=TESTS.parent
    )


def test_the_rule_file_is_valid() -> None:
    done = promtool("check", "rules", str(RULES))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS: 5 rules found" in done.stdout


def test_every_alert_fires_when_it_should_and_only_then() -> None:
    done = promtool("test", "rules", TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_a_wrong_expectation_fails(tmp_path: Path) -> None:
    """The harness can fail: the same tests, expecting the queue alert one minute early."""
    text = TESTS.read_text().replace("- eval_time: 6m", "- eval_time: 4m", 1)
    text = text.replace("../../charts", str(REPO / "charts"))
    broken = tmp_path / "broken.test.yaml"
    broken.write_text(text)
    done = promtool("test", "rules", str(broken))
    assert done.returncode != 0
    assert "TrackrelayQueueNearQuota" in done.stdout + done.stderr
