from __future__ import annotations

from pathlib import Path

import pytest

from trackrelay.settings import OrderSettings, resolve_database_url, sqlite_file


def test_database_urls_resolve_to_async_drivers(tmp_path: Path) -> None:
    assert resolve_database_url(None, tmp_path) == f"sqlite+aiosqlite:///{tmp_path}/trackrelay.db"
    assert resolve_database_url("postgresql://u@h/db", tmp_path) == "postgresql+asyncpg://u@h/db"
    assert resolve_database_url("postgres://u@h/db", tmp_path) == "postgresql+asyncpg://u@h/db"
    assert resolve_database_url("sqlite:///x.db", tmp_path) == "sqlite+aiosqlite:///x.db"
    with pytest.raises(ValueError, match="unsupported database URL"):
        resolve_database_url("mysql://h/db", tmp_path)


def test_settings_come_from_trackrelay_env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TRACKRELAY_REDIS_URL", "redis://example:1/0")
    monkeypatch.setenv("TRACKRELAY_MAX_ITEMS", "7")
    monkeypatch.setenv("TRACKRELAY_DATABASE_URL", "")
    s = OrderSettings()
    assert s.redis_url == "redis://example:1/0"
    assert s.max_items == 7
    assert s.database_url is None
    monkeypatch.setenv("TRACKRELAY_MAX_ITEMS", "-1")
    with pytest.raises(ValueError):
        OrderSettings()


def test_sqlite_file_names_only_real_files() -> None:
    assert sqlite_file("sqlite+aiosqlite:////tmp/a/o.db") == Path("/tmp/a/o.db")
    assert sqlite_file("sqlite+aiosqlite:///rel/o.db?timeout=5") == Path("rel/o.db")
    assert sqlite_file("sqlite+aiosqlite:///:memory:") is None
    assert sqlite_file("sqlite+aiosqlite:///file:x?mode=memory&uri=true") is None
    assert sqlite_file("postgresql+asyncpg://u@h/db") is None
