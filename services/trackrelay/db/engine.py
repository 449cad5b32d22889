"""The order database's engine: one place that knows how to open SQLite and PostgreSQL.

Both the order path and the relay use the same engine settings, so durability
(a 201 promises the order survives a crash) and error hygiene (no parameters in
logs) hold for every statement.
"""

from __future__ import annotations

import contextlib
import sqlite3
from typing import Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from trackrelay.config.settings import sqlite_file
from trackrelay.config.tls import postgres_tls

CONNECT_TIMEOUT = 5.0
"""Seconds a PostgreSQL connection may take to open. A database pod replaced in a
cluster leaves its old address silent (no refusal) until the Service moves on: a
connect there waits this long, then the request is a 503 and the next one retries."""


def asyncpg_dsn(database_url: str) -> str:
    """A SQLAlchemy ``postgresql+asyncpg://`` URL as the DSN asyncpg takes."""
    return database_url.replace("postgresql+asyncpg://", "postgresql://", 1)


def make_engine(database_url: str, pool_size: int = 20) -> AsyncEngine:
    """An async engine; SQLite gets WAL and a busy timeout so readers never block writers.

    Durable: a 201 promises the order survives a crash, so SQLite commits with
    ``synchronous=FULL`` (WAL synced at every commit). Parameters are hidden
    from errors and logs: they hold customer data.
    """
    if database_url.startswith("sqlite"):
        _use_wal(database_url)
        engine = create_async_engine(
            database_url, connect_args={"timeout": 30}, hide_parameters=True
        )

        @event.listens_for(engine.sync_engine, "connect")
        def _pragmas(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=FULL")
            cur.close()

        return engine
    # No pre-ping (a round trip per request): a dead connection fails its request
    # with 503 and the pool drops it, so the next request gets a fresh one. No
    # overflow: overflow connections are closed on return, and opening connections
    # (and preparing statements again) under load costs more than waiting for one.
    # TLS: the URL's sslmode/sslrootcert/sslcert/sslkey become asyncpg's ssl argument.
    url, tls = postgres_tls(database_url)
    connect_args: dict[str, Any] = {"timeout": CONNECT_TIMEOUT}
    if tls is not None:
        connect_args["ssl"] = tls
    return create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=0,
        hide_parameters=True,
        connect_args=connect_args,
    )


def _use_wal(database_url: str) -> None:
    """Put a SQLite file in WAL mode (readers never block the writer), once, up front.

    WAL is a property of the file. Switching from many fresh pool connections at
    once fails with "database is locked", so it is done here, before any pool use.
    """
    path = sqlite_file(database_url)
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.closing(sqlite3.connect(path, timeout=30)) as conn:
        conn.execute("PRAGMA journal_mode=WAL")


async def ping(engine: AsyncEngine) -> None:
    async with engine.connect() as conn:
        await conn.execute(select(1))
