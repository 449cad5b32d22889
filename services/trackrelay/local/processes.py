"""Child processes of ``trackrelay up``: start ``trackrelay <role>``, wait for it, stop them all."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path

from trackrelay.local.embedded_redis import die_with_parent


def spawn_role(
    args: Sequence[str], env: Mapping[str, str], log_path: Path | None = None
) -> subprocess.Popen[bytes]:
    """Start ``trackrelay ARGS`` with this interpreter; it dies with us."""
    out = log_path.open("ab") if log_path else subprocess.DEVNULL
    try:
        return subprocess.Popen(
            [sys.executable, "-m", "trackrelay.cli", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=die_with_parent,
        )
    finally:
        if log_path and not isinstance(out, int):
            out.close()


def wait_http(url: str, timeout: float, proc: subprocess.Popen[bytes] | None = None) -> None:
    """Wait until ``url`` answers 2xx; fail early if ``proc`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"{url}: the process exited with {proc.returncode} at start")
        try:
            with urllib.request.urlopen(url, timeout=1) as r:
                if 200 <= r.status < 300:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.1)
    raise RuntimeError(f"{url} did not answer within {timeout}s")


def stop_all(procs: Sequence[subprocess.Popen[bytes]], timeout: float = 15.0) -> None:
    """SIGTERM every child, wait for them, SIGKILL what is left."""
    for p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + timeout
    for p in procs:
        try:
            p.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
