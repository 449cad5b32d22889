"""A throwaway Prometheus (Debian's ``prometheus`` binary) scraping given targets.

It listens on a free loopback port, keeps its TSDB in a temporary directory and
scrapes every target every ``interval`` seconds (job ``analytics``). ``start``
returns once Prometheus answers ``/-/ready``; ``wait_up`` once every target has
been scraped and is up, so a query over their metrics can find data.

    with PrometheusServer(tmp_path / "prom", ["127.0.0.1:8100"]) as prom:
        prom.wait_up()
        ... prom.url ...
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from trackrelay.local.embedded_redis import die_with_parent
from trackrelay.runtime.ports import free_port

JOB = "analytics"


def prometheus_binary() -> str | None:
    return shutil.which("prometheus")


def scrape_config(targets: Sequence[str], interval: float) -> str:
    """The configuration: one job scraping ``targets`` every ``interval`` seconds."""
    every = f"{round(interval * 1000)}ms"
    timeout = f"{round(interval * 800)}ms"
    config = {
        "global": {"scrape_interval": every, "evaluation_interval": every},
        "scrape_configs": [
            {
                "job_name": JOB,
                "scrape_interval": every,
                "scrape_timeout": timeout,
                "static_configs": [{"targets": list(targets)}],
            }
        ],
    }
    return json.dumps(config, indent=1)  # JSON is YAML


class PrometheusServer:
    def __init__(self, base: Path, targets: Sequence[str], interval: float = 0.5) -> None:
        binary = prometheus_binary()
        if binary is None:
            raise RuntimeError("prometheus not found: apt-get install prometheus")
        self.binary = binary
        self.base = base
        self.targets = list(targets)
        self.interval = interval
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = base / "prometheus.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> PrometheusServer:
        self.base.mkdir(parents=True, exist_ok=True)
        config = self.base / "prometheus.yml"
        config.write_text(scrape_config(self.targets, self.interval))
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                [
                    self.binary,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={self.base / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                ],
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=die_with_parent,
            )
        self._until(self._ready, timeout, "answers /-/ready")
        return self

    def _ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                return bool(r.status == 200)
        except (urllib.error.URLError, OSError):
            return False

    def _until(self, check: Any, timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while not check():
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(
                    f"prometheus exited with {self.process.returncode}: {self.log_tail()}"
                )
            if time.monotonic() > deadline:
                raise RuntimeError(f"prometheus never {what} within {timeout}s: {self.log_tail()}")
            time.sleep(0.1)

    def log_tail(self, lines: int = 10) -> str:
        return " | ".join(self.log.read_text(errors="replace").splitlines()[-lines:])

    def query(self, promql: str) -> dict[str, Any]:
        """The JSON answer of an instant query (for the tests' own checks)."""
        q = urllib.parse.urlencode({"query": promql})
        with urllib.request.urlopen(f"{self.url}/api/v1/query?{q}", timeout=5) as r:
            answer: dict[str, Any] = json.loads(r.read())
        return answer

    def targets_up(self) -> bool:
        """Every target scraped at least once, and up."""
        try:
            result = self.query(f'up{{job="{JOB}"}} == 1')["data"]["result"]
        except (urllib.error.URLError, OSError, KeyError):
            return False
        return len(result) == len(self.targets)

    def wait_up(self, timeout: float = 60.0) -> None:
        self._until(self.targets_up, timeout, "saw every target up")

    def freeze(self) -> None:
        """SIGSTOP: it accepts connections (the kernel does) and answers nothing."""
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGSTOP)

    def thaw(self) -> None:
        assert self.process is not None
        os.kill(self.process.pid, signal.SIGCONT)

    def stop(self, timeout: float = 30.0) -> None:
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        os.kill(process.pid, signal.SIGCONT)  # a frozen one could not stop
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()

    def __enter__(self) -> PrometheusServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
