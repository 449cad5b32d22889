"""What a test needs from the machine, checked once before any test runs.

A test says what it needs with ``@pytest.mark.needs("chromium")`` (or by using
the ``postgres`` fixture, or by living in ``tests/cluster``). When a selected
test needs something this machine lacks, the run stops at collection with one
message that names each missing piece and the command that brings it
(``tests/setup.sh``): a missing prerequisite is an error, never a skip.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from tests.support.kube import cache_bin_dir, missing_binaries
from tests.support.postgres import find_pg_bin

CHROMIUM = "/usr/lib/chromium/chromium"
"""Debian's Chromium binary (the demo report's browser test drives it with Playwright)."""


@dataclass(frozen=True)
class Prerequisite:
    name: str
    present: Callable[[], bool]
    remedy: str


def _chromium() -> bool:
    return os.access(CHROMIUM, os.X_OK)


def _control_plane() -> bool:
    return not missing_binaries(cache_bin_dir())


PREREQUISITES: dict[str, Prerequisite] = {
    p.name: p
    for p in (
        Prerequisite(
            "postgres",
            lambda: find_pg_bin() is not None,
            "the PostgreSQL server (initdb, pg_ctl): apt-get install postgresql",
        ),
        Prerequisite("chromium", _chromium, f"Chromium at {CHROMIUM}: apt-get install chromium"),
        Prerequisite(
            "promtool",
            lambda: shutil.which("promtool") is not None,
            "promtool: apt-get install prometheus",
        ),
        Prerequisite(
            "prometheus",
            lambda: shutil.which("prometheus") is not None,
            "prometheus (the server): apt-get install prometheus",
        ),
        Prerequisite(
            "go", lambda: shutil.which("go") is not None, "Go >= 1.25 on PATH (the module proxy)"
        ),
        Prerequisite(
            "control-plane",
            _control_plane,
            f"etcd, kube-apiserver, kube-controller-manager, kubectl and helm in {cache_bin_dir()}:"
            " make cluster-tools",
        ),
    )
}


def missing(names: Iterable[str]) -> list[Prerequisite]:
    """The prerequisites among ``names`` that this machine lacks, in a stable order."""
    unknown = set(names) - PREREQUISITES.keys()
    if unknown:
        raise ValueError(f"unknown prerequisite(s): {sorted(unknown)}")
    return [PREREQUISITES[n] for n in sorted(set(names)) if not PREREQUISITES[n].present()]


def message(lacking: list[Prerequisite], tests: dict[str, list[str]]) -> str:
    lines = ["the selected tests need what this machine lacks:"]
    for p in lacking:
        first = tests[p.name][:3]
        more = len(tests[p.name]) - len(first)
        lines.append(f"  - {p.remedy}")
        lines.append(f"    (needed by {', '.join(first)}{f' and {more} more' if more else ''})")
    setup = Path(__file__).resolve().parents[1] / "setup.sh"
    lines.append(f"run {setup} (as root on Debian it installs them), or make test, which runs it")
    return "\n".join(lines)
