"""A throwaway PostgreSQL cluster (initdb + pg_ctl) on a free loopback port.

PostgreSQL refuses to run as root, so as root the cluster runs as the
``postgres`` system user that Debian's package creates.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import subprocess
import uuid
from pathlib import Path

from trackrelay.runtime.ports import free_port


def find_pg_bin() -> Path | None:
    found = shutil.which("pg_ctl")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"), reverse=True)
    return candidates[0].parent if candidates else None


FAST_SETTINGS = "fsync=off synchronous_commit=off full_page_writes=off"
"""Test clusters trade crash safety for speed: nothing in a test outlives a crash."""
DURABLE_SETTINGS = "fsync=on synchronous_commit=on full_page_writes=on"
"""PostgreSQL's defaults: a commit is on disk before it is acknowledged."""


class PgCommandFailed(subprocess.CalledProcessError):
    """A PostgreSQL command failed; the message carries what it printed."""

    def __str__(self) -> str:
        said = (self.stderr or "").strip() or "(no output)"
        return f"{super().__str__()}: {said}"


class PostgresCluster:
    def __init__(self, base: Path, durable: bool = False) -> None:
        self.durable = durable
        bindir = find_pg_bin()
        if bindir is None:
            raise RuntimeError("PostgreSQL server binaries (initdb, pg_ctl) not found")
        self.bindir = bindir
        self.base = base
        self.datadir = base / "data"
        self.port = free_port()
        self.user: str | None = "postgres" if os.geteuid() == 0 else None

    @property
    def settings(self) -> str:
        return DURABLE_SETTINGS if self.durable else FAST_SETTINGS

    def _run(self, *args: str) -> None:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self.user:
            cmd = ["runuser", "-u", self.user, "--", *cmd]
        done = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        if done.returncode != 0:
            raise PgCommandFailed(done.returncode, cmd, stderr=done.stderr)

    def start(self) -> PostgresCluster:
        self.base.mkdir(parents=True, exist_ok=True)
        if self.user:
            pw = pwd.getpwnam(self.user)
            os.chown(self.base, pw.pw_uid, pw.pw_gid)
            # runuser needs to traverse the path to reach the data directory.
            for parent in self.base.parents:
                if str(parent).startswith("/tmp"):
                    os.chmod(parent, os.stat(parent).st_mode | 0o011)
        self._run(
            "initdb",
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
            "-E",
            "UTF8",
        )
        self.pg_start()
        return self

    def pg_start(self) -> None:
        settings = " ".join(f"-c {kv}" for kv in self.settings.split())
        opts = (
            f"-p {self.port} -k {self.base} -c listen_addresses=127.0.0.1 "
            f"{settings} -c max_connections=200"
        )
        self._run(
            "pg_ctl",
            "-D",
            str(self.datadir),
            "-o",
            opts,
            "-l",
            str(self.base / "pg.log"),
            "-w",
            "start",
        )

    def pg_stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", "fast", "-w", "stop")

    def url(self, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self) -> str:
        name = "t_" + uuid.uuid4().hex[:12]
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return self.url(name)

    def stop(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.pg_stop()
