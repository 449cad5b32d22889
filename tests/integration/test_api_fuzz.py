"""Fuzz the order API from its own OpenAPI document with schemathesis, on both stores.

A third-party client generates valid and invalid requests from ``/openapi.json``
and runs every check it has: no 5xx, no status code, content type or header the
document does not declare, valid data accepted, invalid data refused. A bounded
number of examples keeps each store's run well under a minute.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.runtime.ports import free_port

EXAMPLES = 100


def test_schemathesis_finds_nothing(database_url: str, tmp_path: Path) -> None:
    port = free_port()
    server = spawn_role(
        ["orders", "--no-relay", "--port", str(port), "--database-url", database_url],
        {},
        tmp_path / "orders.log",
    )
    try:
        wait_http(f"http://127.0.0.1:{port}/readyz", 30, server)
        done = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")),
                "run",
                f"http://127.0.0.1:{port}/openapi.json",
                "--checks",
                "all",
                "--max-examples",
                str(EXAMPLES),
                "--no-color",
            ],
            capture_output=True,
            text=True,
            timeout=240,
            cwd=tmp_path,
        )
    finally:
        stop_all([server])
    report = done.stdout[-6000:] + done.stderr[-2000:]
    assert done.returncode == 0, report
    assert "No issues found" in done.stdout, report
    assert "Internal Server Error" not in (tmp_path / "orders.log").read_text()
