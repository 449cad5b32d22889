"""Free loopback ports for servers this machine starts (embedded Redis, simulator, metrics).

By default the kernel picks one (bind to port 0). With ``TRACKRELAY_PORT_RANGE=first-last``
ports come from that range in turn, shared by every process that sees the same range: a
counter file under the temporary directory, taken under a lock, so two processes never get
the same port until the range has gone round once. Set a range when ports must be
predictable (a firewall) or when several runs share one machine: a server that is stopped
and started again on its port keeps it, because nobody else is handed that port meanwhile.
"""

from __future__ import annotations

import fcntl
import os
import socket
import tempfile
from pathlib import Path

RANGE_VARIABLE = "TRACKRELAY_PORT_RANGE"


def port_range(value: str | None = None) -> tuple[int, int] | None:
    """The range named by ``TRACKRELAY_PORT_RANGE`` (or ``value``), or None when unset."""
    text = os.environ.get(RANGE_VARIABLE, "") if value is None else value
    if not text.strip():
        return None
    first_text, sep, last_text = text.strip().partition("-")
    try:
        first, last = int(first_text), int(last_text)
    except ValueError:
        first = last = -1
    if not sep or not 1024 <= first <= last <= 65535:
        raise ValueError(
            f"{RANGE_VARIABLE}={text!r}: expected FIRST-LAST, two ports from 1024 to 65535"
        )
    return first, last


def free_port(host: str = "127.0.0.1") -> int:
    span = port_range()
    if span is None:
        with socket.socket() as s:
            s.bind((host, 0))
            return int(s.getsockname()[1])
    first, last = span
    size = last - first + 1
    counter = Path(tempfile.gettempdir()) / f"trackrelay-ports-{first}-{last}"
    with open(counter, "a+") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        f.seek(0)
        text = f.read().strip()
        turn = int(text) if text.isdigit() else 0
        try:
            for step in range(size):
                port = first + (turn + step) % size
                if _bindable(host, port):
                    turn += step + 1
                    return port
            raise RuntimeError(f"no free port in {RANGE_VARIABLE}={first}-{last}")
        finally:
            f.seek(0)
            f.truncate()
            f.write(str(turn % size))
            f.flush()


def _bindable(host: str, port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True
