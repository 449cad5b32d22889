"""The order path's one hot statement on PostgreSQL, over a raw asyncpg pool.

Profiling ``POST /v1/orders`` showed SQLAlchemy's async layer (connection
checkout, greenlet hand-off, execution options) costing about as much CPU as
asyncpg executing the statement itself. The insert is one fixed CTE with
positional parameters, so it needs none of it: this pool runs just that
statement. Everything else (reads, idempotency look-ups, the relay, migrations)
keeps using the SQLAlchemy engine. Driver errors come back as SQLAlchemy's
``IntegrityError`` / ``OperationalError``, so callers handle one family.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import asyncpg
from sqlalchemy.exc import IntegrityError, OperationalError

from trackrelay.config.tls import postgres_tls
from trackrelay.db.engine import CONNECT_TIMEOUT, asyncpg_dsn
from trackrelay.db.schema import NOTIFY_OUTBOX

ORDER_WITH_OUTBOX = (
    "WITH o AS (INSERT INTO orders (order_id, customer_id, total, created_at, idempotency_key,"
    " request_hash) VALUES ($1, $2, $3, $4, $5, $6)),"
    " l AS (INSERT INTO order_lines (order_id, line_no, sku, qty, price)"
    " SELECT $1, * FROM unnest($7::int[], $8::varchar[], $9::int[], $10::bigint[]))"
    ", x AS (INSERT INTO outbox (event_id, payload, created_at)"
    " SELECT * FROM unnest($11::varchar[], $12::text[], $13::float8[]))"
    f" {NOTIFY_OUTBOX}"
)
"""The order, its lines and one outbox row per line: one statement, one round trip, atomic;
its commit wakes every relay listening (``relay.wakeup``)."""

STORE_ERRORS = (
    asyncpg.PostgresError,
    asyncpg.InterfaceError,
    asyncpg.InternalClientError,
    OSError,
    TimeoutError,
)
"""What the insert raises when the store is down or restarting: each is the store's
(a 503), none the order's. ``InternalClientError`` comes from a connection PostgreSQL
dropped mid-statement (seen in the chaos run: a 500 while the database pod restarted)."""


class PgOrderWriter:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self.pool = pool

    @classmethod
    async def open(
        cls, database_url: str, size: int, timeout: float = CONNECT_TIMEOUT
    ) -> PgOrderWriter:
        dsn, tls = postgres_tls(asyncpg_dsn(database_url))  # as the engine's (engine.py)
        pool = await asyncpg.create_pool(
            dsn, min_size=size, max_size=size, timeout=timeout, ssl=tls
        )
        return cls(pool)

    async def insert(self, params: Sequence[Any]) -> None:
        try:
            async with self.pool.acquire() as con:
                try:
                    await con.execute(ORDER_WITH_OUTBOX, *params)
                except asyncpg.InternalClientError:
                    # A connection the server dropped mid-statement can be left in a state
                    # no later statement gets out of ("cannot switch to state ..."): it is
                    # closed, and the pool opens another.
                    con.terminate()
                    raise
        except asyncpg.UniqueViolationError as exc:
            raise IntegrityError("insert order", None, exc) from None
        except STORE_ERRORS as exc:
            raise OperationalError("insert order", None, exc) from None

    async def close(self) -> None:
        await self.pool.close()
