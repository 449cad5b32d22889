"""Alembic environment: runs the migrations on the async engine named in the config.

Safe with many replicas starting at once: on PostgreSQL the upgrade runs under a
transaction-scoped advisory lock, so one replica migrates while the others wait,
then find the schema at head and do nothing. (SQLite serialises writers itself.)
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy.engine import Connection

from trackrelay.db.engine import make_engine
from trackrelay.db.schema import MIGRATION_LOCK_KEY, metadata


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=metadata)
    with context.begin_transaction():
        if connection.dialect.name == "postgresql":
            connection.exec_driver_sql(f"SELECT pg_advisory_xact_lock({MIGRATION_LOCK_KEY})")
        context.run_migrations()


async def _main() -> None:
    url = context.config.get_main_option("sqlalchemy.url")
    assert url, "sqlalchemy.url must be set"
    engine = make_engine(url, pool_size=1)  # the services' settings, TLS among them
    try:
        async with engine.connect() as conn:
            await conn.run_sync(_run)
            await conn.commit()
    finally:
        await engine.dispose()


asyncio.run(_main())
