"""Apply the order store's schema migrations (Alembic) to a database URL.

Blocking: it runs its own event loop, so async callers use ``asyncio.to_thread``.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

from trackrelay.config.settings import sqlite_file

_SCRIPTS = Path(__file__).with_name("migrations")


def upgrade(database_url: str, revision: str = "head") -> None:
    """Bring the database at ``database_url`` (async SQLAlchemy URL) to ``revision``."""
    db_file = sqlite_file(database_url)
    if db_file is not None:
        db_file.parent.mkdir(parents=True, exist_ok=True)
    config = Config()
    config.set_main_option("script_location", str(_SCRIPTS))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    command.upgrade(config, revision)
