"""The stores' TLS parameters read from their URLs (trackrelay/config/tls.py)."""

from __future__ import annotations

import ssl
from pathlib import Path

import pytest
from pydantic import ValidationError

from tests.support.certs import server_tls
from trackrelay.config.settings import ForwarderSettings, StoreSettings
from trackrelay.config.tls import (
    SentinelTarget,
    check_redis_url,
    cluster_url,
    postgres_tls,
    sentinel_target,
)
from trackrelay.runtime.redact import redact_url


@pytest.fixture
def tls(tmp_path: Path) -> Path:
    directory = server_tls(["db.example"]).write(tmp_path / "tls")
    client = server_tls(["unused"]).ca.issue(common_name="app", client=True)
    (directory / "client.crt").write_bytes(client.cert)
    (directory / "client.key").write_bytes(client.key)
    return directory


def test_verify_full_is_a_context_that_checks_the_name_and_leaves_the_url_bare(tls: Path) -> None:
    url = f"postgresql+asyncpg://u:p@db/orders?sslmode=verify-full&sslrootcert={tls}/ca.crt"
    bare, context = postgres_tls(url + "&application_name=x")
    assert bare == "postgresql+asyncpg://u:p@db/orders?application_name=x"
    assert isinstance(context, ssl.SSLContext)
    assert context.check_hostname and context.verify_mode == ssl.CERT_REQUIRED
    assert len(context.get_ca_certs()) == 1


def test_verify_ca_checks_the_ca_only_and_require_without_a_ca_checks_nothing(tls: Path) -> None:
    _, ca_only = postgres_tls(f"postgresql://db/o?sslmode=verify-ca&sslrootcert={tls}/ca.crt")
    assert isinstance(ca_only, ssl.SSLContext)
    assert not ca_only.check_hostname and ca_only.verify_mode == ssl.CERT_REQUIRED
    _, anything = postgres_tls("postgresql://db/o?sslmode=require")
    assert isinstance(anything, ssl.SSLContext) and anything.verify_mode == ssl.CERT_NONE


def test_a_client_certificate_is_loaded_and_the_modes_asyncpg_implements_pass_through(
    tls: Path,
) -> None:
    files = f"sslrootcert={tls}/ca.crt&sslcert={tls}/client.crt&sslkey={tls}/client.key"
    _, context = postgres_tls(f"postgresql://db/o?sslmode=verify-full&{files}")
    assert isinstance(context, ssl.SSLContext)
    assert postgres_tls("postgresql://db/o?sslmode=prefer") == ("postgresql://db/o", "prefer")
    assert postgres_tls("postgresql://db/o") == ("postgresql://db/o", None)


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("sslmode=verify", "sslmode 'verify' is not one of"),
        ("sslmode=verify-full", "sslmode verify-full needs sslrootcert"),
        ("sslmode=verify-full&sslrootcert=/nowhere", "sslrootcert: cannot read"),
        ("sslmode=disable&sslrootcert={tls}/ca.crt", "sslrootcert given with sslmode disable"),
        ("sslmode=verify-full&sslrootcert={tls}/tls.key", "sslrootcert: cannot read"),
        ("sslmode=require&sslkey={tls}/client.key", "sslkey is given without sslcert"),
        ("sslmode=require&sslcert={tls}/ca.crt", "sslcert: cannot read a client certificate"),
    ],
)
def test_a_postgres_tls_parameter_that_cannot_work_is_named(
    tls: Path, query: str, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        postgres_tls(f"postgresql://db/o?{query.format(tls=tls)}")


def test_redis_urls_are_checked_and_the_url_is_still_redacted(tls: Path) -> None:
    good = f"rediss://relay:s3cret@redis.ns.svc:6379/0?ssl_ca_certs={tls}/ca.crt"
    check_redis_url(good)
    check_redis_url("redis://127.0.0.1:6379/0")
    assert redact_url(good) == f"rediss://relay:***@redis.ns.svc:6379/0?ssl_ca_certs={tls}/ca.crt"
    with pytest.raises(ValueError, match="ssl_ca_certs: cannot read"):
        check_redis_url("rediss://h/0?ssl_ca_certs=/nowhere")
    with pytest.raises(ValueError, match="ssl_ca_certs given on a redis:// URL"):
        check_redis_url(f"redis://h/0?ssl_ca_certs={tls}/ca.crt")
    with pytest.raises(ValueError, match="ssl_cert_reqs 'all' is not one of"):
        check_redis_url("rediss://h/0?ssl_cert_reqs=all")
    with pytest.raises(ValueError, match="ssl_certfile/ssl_keyfile: cannot read"):
        check_redis_url(f"rediss://h/0?ssl_certfile={tls}/client.crt&ssl_keyfile={tls}/tls.key")


def test_a_cluster_url_is_read_as_the_scheme_it_stands_for(tls: Path) -> None:
    assert cluster_url("redis+cluster://10.0.0.1:7000") == "redis://10.0.0.1:7000"
    assert cluster_url("REDISS+CLUSTER://h:7000?x=1") == "rediss://h:7000?x=1"
    assert cluster_url("redis://h:6379/0") is None and cluster_url("h:6379") is None
    check_redis_url(f"rediss+cluster://relay:pw@redis:6379?ssl_ca_certs={tls}/ca.crt")
    with pytest.raises(ValueError, match="ssl_ca_certs given on a redis:// URL"):
        check_redis_url(f"redis+cluster://h:7000?ssl_ca_certs={tls}/ca.crt")
    with pytest.raises(ValueError, match="ssl_ca_certs: cannot read"):
        check_redis_url("rediss+cluster://h:7000?ssl_ca_certs=/nowhere")


def test_a_sentinel_url_names_its_sentinels_service_and_the_primary_s_credentials() -> None:
    got = sentinel_target("redis+sentinel://relay:p%40ss@s1:26379,s2:26380/shop/2")
    assert got == SentinelTarget([("s1", 26379), ("s2", 26380)], "shop", 2, "relay", "p@ss")
    assert sentinel_target("redis+sentinel://s1:26379/shop") == SentinelTarget(
        [("s1", 26379)], "shop"
    )
    raw = sentinel_target("redis+sentinel://u:a/b@c@s1:26379/shop")  # a raw password
    assert raw is not None and raw.password == "a/b@c" and raw.sentinels == [("s1", 26379)]
    assert sentinel_target("redis://h:6379/0") is None
    with pytest.raises(ValueError, match="names its service"):
        sentinel_target("redis+sentinel://s1:26379")
    with pytest.raises(ValueError, match="'s1' is not host:port"):
        sentinel_target("redis+sentinel://s1/shop")
    with pytest.raises(ValueError, match="not supported"):
        sentinel_target("rediss+sentinel://s1:26379/shop")
    with pytest.raises(ValueError, match="plain text"):
        check_redis_url("redis+sentinel://s1:26379/shop?ssl_ca_certs=/x")


def test_the_settings_refuse_a_bad_tls_url_naming_the_setting(tls: Path) -> None:
    with pytest.raises(ValidationError, match=r"database_url\n.*sslmode 'on'"):
        StoreSettings(database_url="postgresql://db/o?sslmode=on")
    with pytest.raises(ValidationError, match=r"redis_url\n.*ssl_ca_certs: cannot read"):
        ForwarderSettings(redis_url="rediss://h/0?ssl_ca_certs=/nowhere")
    StoreSettings(
        database_url=f"postgres://db/o?sslmode=verify-full&sslrootcert={tls}/ca.crt",
        redis_url=f"rediss://h/0?ssl_ca_certs={tls}/ca.crt",
    )
