"""Ports from TRACKRELAY_PORT_RANGE: handed out in turn across processes, never a busy one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from trackrelay.runtime.ports import RANGE_VARIABLE, free_port, port_range


@pytest.fixture
def span(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> tuple[int, int]:
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    # Below the workers' ranges and the kernel's ephemeral ones: nothing else binds here.
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    first = 9000 + 8 * int(worker or 0)
    monkeypatch.setenv(RANGE_VARIABLE, f"{first}-{first + 3}")
    return first, first + 3


def test_the_range_is_read_and_a_bad_one_is_refused_by_name() -> None:
    assert port_range("20000-20009") == (20000, 20009)
    assert port_range("") is None
    for bad in ("20000", "x-y", "20009-20000", "80-90", "20000-70000"):
        with pytest.raises(ValueError, match=RANGE_VARIABLE):
            port_range(bad)


def test_ports_come_in_turn_and_go_round(span: tuple[int, int]) -> None:
    first, _ = span
    got = [free_port() for _ in range(6)]
    assert got == [first, first + 1, first + 2, first + 3, first, first + 1]


def test_a_busy_port_is_passed_over(span: tuple[int, int]) -> None:
    first, _ = span
    with socket.socket() as held:
        held.bind(("127.0.0.1", first))
        held.listen()
        assert free_port() == first + 1
        assert [free_port() for _ in range(3)] == [first + 2, first + 3, first + 1]


def test_another_process_continues_the_turn(span: tuple[int, int]) -> None:
    first, _ = span
    assert free_port() == first
    code = (
        "import tempfile, sys; tempfile.tempdir = sys.argv[1];"
        "from trackrelay.runtime.ports import free_port; print(free_port())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, tempfile.gettempdir()],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    assert int(out) == first + 1
    assert free_port() == first + 2
