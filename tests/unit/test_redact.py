"""Passwords never reach a log line, a banner or an error message."""

from __future__ import annotations

from urllib.parse import quote

import pytest
from sqlalchemy.exc import OperationalError

from trackrelay.queue.client import RedisDurability, version_refusal
from trackrelay.runtime.errors import StartupError, brief, describe
from trackrelay.runtime.redact import redact_text, redact_url


def test_urls_lose_their_password_and_keep_the_rest() -> None:
    assert redact_url("postgresql://shop:pw@db:5432/o") == "postgresql://shop:***@db:5432/o"
    assert redact_url("redis://:pw@h:6379/0") == "redis://:***@h:6379/0"
    assert redact_url("redis://h:6379/0") == "redis://h:6379/0"
    assert redact_url("sqlite+aiosqlite:///x.db") == "sqlite+aiosqlite:///x.db"


def test_text_loses_known_passwords_wherever_they_appear() -> None:
    text = "failed for user shop with password hunter2 at postgresql://shop:hunter2@db/o"
    out = redact_text(text, "postgresql://shop:hunter2@db/o")
    assert "hunter2" not in out
    assert "postgresql://shop:***@db/o" in out


def test_describe_is_one_line() -> None:
    exc = StartupError("cannot reach redis://:pw@h/0\nsecond line")
    assert describe(exc, "redis://:pw@h/0") == "cannot reach redis://:***@h/0"
    assert describe(ConnectionRefusedError(111, "Connection refused")) == (
        "ConnectionRefusedError: [Errno 111] Connection refused"
    )


def test_brief_names_database_errors_by_class_only() -> None:
    wrapped = OperationalError("INSERT ... 'customer-secret'", None, ConnectionResetError("gone"))
    assert brief(wrapped) == "ConnectionResetError"
    assert brief(OSError("no route\nmore")) == "OSError: no route"


def test_only_noeviction_may_hold_the_queue() -> None:
    assert RedisDurability("noeviction", "yes", "always").refusal() is None
    assert RedisDurability(None, None, None).refusal() is None  # CONFIG disabled: warned
    refusal = RedisDurability("allkeys-lru", "no", "everysec").refusal()
    assert refusal is not None and "allkeys-lru" in refusal and "noeviction" in refusal


def test_a_redis_older_than_7_is_refused_by_its_version() -> None:
    assert version_refusal("7.0.15") is None
    assert version_refusal("7.2.4") is None
    refusal = version_refusal("6.2.14")
    assert refusal is not None and "6.2.14" in refusal and "7.0" in refusal
    assert version_refusal("") is None  # unnamed: the scripts will say


@pytest.mark.parametrize("password", ["p/a#s?s", "a b+c", "x@y:z", "%2F-already"])
def test_a_password_with_url_characters_is_masked_written_decoded_and_encoded(
    password: str,
) -> None:
    encoded = quote(password, safe="")
    url = f"redis://:{encoded}@redis:6379/0"
    assert redact_url(url) == "redis://:***@redis:6379/0"
    said = f"auth failed for {password} ({encoded}) via {url}"
    masked = redact_text(said, url)
    assert password not in masked and encoded not in masked
    raw = f"postgresql://shop:{password}@db/o"  # written raw by hand
    if "@" not in password:
        assert redact_url(raw) == "postgresql://shop:***@db/o"
        assert password not in redact_text(f"cannot reach {raw}", raw)
