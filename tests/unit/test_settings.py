from __future__ import annotations

from pathlib import Path

import pytest

from trackrelay.config.settings import (
    MIN_SHARD_QUOTA,
    OrderSettings,
    RelaySettings,
    derived_outbox_quota,
    resolve_database_url,
    sqlite_file,
)


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


def test_the_queue_quota_reads_sizes_and_bad_shedding_settings_say_why(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from pydantic import ValidationError

    monkeypatch.setenv("TRACKRELAY_QUEUE_QUOTA", "64MiB")
    monkeypatch.setenv("TRACKRELAY_SHEDDING", "aggregate")
    settings = OrderSettings()
    assert settings.queue_quota == 64 * 1024 * 1024 and settings.shedding == "aggregate"
    monkeypatch.setenv("TRACKRELAY_QUEUE_QUOTA", "lots")
    with pytest.raises(ValidationError, match="queue_quota"):
        OrderSettings()
    monkeypatch.setenv("TRACKRELAY_QUEUE_QUOTA", "1MiB")
    with pytest.raises(ValidationError, match="shedding must be one of"):
        OrderSettings(shedding="thin")
    with pytest.raises(ValidationError, match="sample_at <= aggregate_at < evict_at"):
        OrderSettings(shed_aggregate_at=0.95)


def test_a_queue_quota_alone_bounds_the_outbox_too() -> None:
    """With a queue quota and no outbox quota, the outbox gets one derived from it: the
    order database is never the unbounded overflow of a full or unreachable queue."""
    derived = OrderSettings(queue_quota=2 * 2**20)
    assert derived.outbox_quota == derived_outbox_quota(2 * 2**20) == 32768
    assert derived.outbox_quota_derived
    given = OrderSettings(queue_quota=2 * 2**20, outbox_quota=50)
    assert given.outbox_quota == 50 and not given.outbox_quota_derived
    assert OrderSettings().outbox_quota is None  # no quota at all: no limit
    assert derived_outbox_quota(1024) == 1000  # a tiny quota still leaves room to wait


def test_each_shard_gets_a_share_of_the_quota_a_fold_and_its_flush_fit_in() -> None:
    from trackrelay.queue import quota

    # What a fold leaves free, with a fresh stream node: under the smallest share's limit.
    kept = quota.FLUSH_RESERVE + 2 * quota.SKETCH_MIN * quota.SKETCH_COUNTER + quota.STEP
    assert kept < MIN_SHARD_QUOTA * (1 - 0.02)  # QueueQuota's default headroom
    assert RelaySettings(queue_quota=4 * MIN_SHARD_QUOTA, queue_shards=4).queue_shards == 4
    with pytest.raises(ValueError, match="each of the 4 shards at least 65536 bytes"):
        RelaySettings(queue_quota=4 * MIN_SHARD_QUOTA - 1, queue_shards=4)
    with pytest.raises(ValueError, match="less than or equal to 64"):
        RelaySettings(queue_shards=65)
