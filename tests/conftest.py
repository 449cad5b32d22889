"""Fixtures every suite may use: a real Redis, a real PostgreSQL, database URLs for both stores."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import settings

from tests.support import prerequisites
from tests.support.postgres import PostgresCluster
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.runtime.ports import RANGE_VARIABLE

# Hypothesis' 200 ms deadline per example measures the machine, not the property.
settings.register_profile("trackrelay", deadline=None)
settings.load_profile("trackrelay")


def pytest_configure(config: pytest.Config) -> None:
    """Give each xdist worker its own ports, below the kernel's ephemeral range.

    A test that stops a server and starts it again on the same port (Redis down, then
    back) must not find another worker's server there meanwhile: with the kernel picking
    ports, a port freed by one worker can be handed to the next. Every process a worker
    starts inherits the range and shares its counter.
    """
    match = re.fullmatch(r"gw(\d+)", os.environ.get("PYTEST_XDIST_WORKER", ""))
    worker = int(match.group(1)) if match else 0
    first = 10000 + 2000 * (worker % 11)
    os.environ[RANGE_VARIABLE] = f"{first}-{first + 1999}"


def _needs(item: pytest.Item) -> set[str]:
    names = {str(arg) for mark in item.iter_markers("needs") for arg in mark.args}
    if "postgres" in getattr(item, "fixturenames", ()) or item.get_closest_marker("postgres"):
        names.add("postgres")
    if item.get_closest_marker("cluster"):
        names.add("control-plane")
    return names


LACKING = pytest.StashKey[str]()


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Stop before any test when a selected test needs what this machine lacks.

    In an xdist worker, which cannot stop the run cleanly, each such test fails
    at set-up with the same message instead: an error either way, never a skip.
    """
    needs = [(item, _needs(item)) for item in items]
    tests: dict[str, list[str]] = {}
    for item, names in needs:
        for name in names:
            tests.setdefault(name, []).append(item.nodeid)
    lacking = prerequisites.missing(tests)
    if not lacking:
        return
    text = prerequisites.message(lacking, tests)
    if not hasattr(config, "workerinput"):
        raise pytest.UsageError(text)
    absent = {p.name for p in lacking}
    for item, names in needs:
        if names & absent:
            item.stash[LACKING] = text


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    text = item.stash.get(LACKING, None)
    if text is not None:
        pytest.fail(text, pytrace=False)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    skipped = len(terminalreporter.stats.get("skipped", []))
    if skipped:
        terminalreporter.write_line(
            f"{skipped} test(s) skipped: a skipped test fails the run (nothing here may skip)",
            red=True,
        )


@pytest.hookimpl(trylast=True)
def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    """A skipped test fails the run: a suite that skips what it cannot find checks least."""
    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is not None and reporter.stats.get("skipped") and exitstatus == 0:
        session.exitstatus = pytest.ExitCode.TESTS_FAILED


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """A throwaway redis-server on a free port, stopped after the test."""
    server = EmbeddedRedis(tmp_path / "redis", appendonly=False)
    with server:
        yield server


@pytest.fixture(scope="session")
def postgres(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PostgresCluster]:
    cluster = PostgresCluster(tmp_path_factory.mktemp("pg")).start()
    yield cluster
    cluster.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty database on each store (user-facing URL form)."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'orders.db'}"
    cluster: PostgresCluster = request.getfixturevalue("postgres")
    return cluster.create_database()
