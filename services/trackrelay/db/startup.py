"""Checks the order service and the relay run before serving: store reachable, queue safe.

A command that cannot reach its database stops at once with one line saying so
(``StartupError``), instead of a traceback from inside the server. The queue Redis
is checked too, but an unreachable one only warns: orders never wait for the queue.
"""

from __future__ import annotations

import asyncio
import logging

from sqlalchemy.exc import SQLAlchemyError

from trackrelay.db import engine as database
from trackrelay.db import migrate
from trackrelay.runtime.errors import StartupError, describe
from trackrelay.runtime.redact import redact_url

log = logging.getLogger(__name__)


async def check_store(database_url: str, timeout: float = 10.0) -> None:
    """Fail with ``StartupError`` unless the order store answers within ``timeout``."""
    engine = database.make_engine(database_url)
    try:
        async with asyncio.timeout(timeout):
            await database.ping(engine)
    except (SQLAlchemyError, OSError, TimeoutError) as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else describe(exc, database_url)
        raise StartupError(
            f"cannot reach the order database at {redact_url(database_url)}: {reason}"
        ) from exc
    finally:
        await engine.dispose()


async def migrate_store(database_url: str) -> None:
    try:
        await asyncio.to_thread(migrate.upgrade, database_url)
    except (SQLAlchemyError, OSError) as exc:
        raise StartupError(
            f"cannot migrate the order database at {redact_url(database_url)}: "
            f"{describe(exc, database_url)}"
        ) from exc
