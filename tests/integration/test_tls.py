"""TLS to both stores, with certificates made here (tests/support/certs.py): a Redis that
listens only for TLS and a PostgreSQL whose pg_hba admits only ``hostssl``. Orders go the
whole way over them (order service, relay, migrations, forwarder, the operator's reads),
PostgreSQL's ``pg_stat_ssl`` shows every session encrypted, and a client that trusts
another CA, expects another name or speaks plain text is refused.
"""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, urlsplit

import asyncpg
import pytest
import redis

from tests.integration.conftest import run_cli, wait_for
from tests.integration.test_redis_users import lag, observe_as, state
from tests.integration.test_workers import ORDER, post
from tests.support.certs import CertificateAuthority, ServerTLS, server_tls
from tests.support.postgres import PostgresCluster
from trackrelay.config.tls import postgres_tls
from trackrelay.db import engine as database
from trackrelay.local.embedded_redis import EmbeddedRedis, die_with_parent
from trackrelay.local.processes import spawn_role, stop_all, wait_http
from trackrelay.orders.pg_writer import PgOrderWriter
from trackrelay.queue import client
from trackrelay.runtime.ports import free_port

pytestmark = pytest.mark.postgres


class TlsRedis(EmbeddedRedis):
    """redis-server with no plain-text port: TLS only, on ``port``."""

    def __init__(self, data_dir: Path, tls: Path, auth_clients: str = "optional") -> None:
        super().__init__(data_dir, appendonly=False)
        self.tls = tls
        self.auth_clients = auth_clients

    def command(self) -> list[str]:
        cmd = super().command()
        cmd[cmd.index("--port") + 1] = "0"
        return [
            *cmd,
            "--tls-port",
            str(self.port),
            "--tls-cert-file",
            str(self.tls / "tls.crt"),
            "--tls-key-file",
            str(self.tls / "tls.key"),
            "--tls-ca-cert-file",
            str(self.tls / "ca.crt"),
            "--tls-auth-clients",
            self.auth_clients,
        ]

    def url_with(self, ca: Path, host: str = "127.0.0.1", extra: str = "") -> str:
        return f"rediss://{host}:{self.port}/0?ssl_ca_certs={quote(str(ca))}{extra}"

    @property
    def url(self) -> str:
        return self.url_with(self.tls / "ca.crt")

    def start(self, timeout: float = 10.0) -> TlsRedis:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(
            self.command(), stdout=subprocess.DEVNULL, preexec_fn=die_with_parent
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.process.poll() is None, (self.data_dir / "redis.log").read_text()
            try:
                with redis.Redis.from_url(self.admin_url, socket_timeout=1) as r:
                    if r.ping():
                        return self
            except (redis.exceptions.ConnectionError, OSError):
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"TLS redis-server did not answer on port {self.port}")

    def __enter__(self) -> TlsRedis:
        return self.start()

    @property
    def admin_url(self) -> str:
        """Presents a client certificate when ``auth_clients`` is ``yes``."""
        if self.auth_clients != "yes":
            return self.url
        files = f"&ssl_certfile={self.tls / 'client.crt'}&ssl_keyfile={self.tls / 'client.key'}"
        return self.url_with(self.tls / "ca.crt", extra=files)


class TlsPostgres(PostgresCluster):
    """A PostgreSQL with ``ssl=on`` whose pg_hba has ``hostssl`` rows only."""

    def __init__(self, base: Path, tls: ServerTLS) -> None:
        super().__init__(base)
        self.server_tls = tls
        self.tls = base / "tls"

    @property
    def settings(self) -> str:
        files = (
            f"ssl=on ssl_cert_file={self.tls / 'tls.crt'} ssl_key_file={self.tls / 'tls.key'} "
            f"ssl_ca_file={self.tls / 'ca.crt'} hba_file={self.base / 'pg_hba.conf'}"
        )
        return f"{super().settings} {files}"

    def start(self) -> TlsPostgres:
        import os
        import pwd

        self.base.mkdir(parents=True, exist_ok=True)
        self.server_tls.write(self.tls)
        hba = self.base / "pg_hba.conf"
        hba.write_text("hostssl all all 127.0.0.1/32 trust\n")
        if self.user:
            pw = pwd.getpwnam(self.user)
            for path in (self.tls, *self.tls.iterdir(), hba):
                os.chown(path, pw.pw_uid, pw.pw_gid)
            # as the chart's Secret volume holds it: root's, the server's group, 0640
            os.chown(self.tls / "tls.key", 0, pw.pw_gid)
            (self.tls / "tls.key").chmod(0o640)
        super().start()
        return self

    def tls_url(self, database: str, ca: Path, host: str = "127.0.0.1", mode: str = "") -> str:
        mode = mode or "verify-full"
        return (
            f"postgresql://postgres@{host}:{self.port}/{database}"
            f"?sslmode={mode}&sslrootcert={quote(str(ca))}"
        )

    def create_database(self) -> str:
        name = f"t_{free_port()}_{int(time.time() * 1000) % 100000}"
        dsn, tls = postgres_tls(self.tls_url("postgres", self.tls / "ca.crt"))

        async def create() -> None:
            conn = await asyncpg.connect(dsn, ssl=tls)
            try:
                await conn.execute(f'CREATE DATABASE "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return self.tls_url(name, self.tls / "ca.crt")


@pytest.fixture(scope="module")
def certs() -> ServerTLS:
    """The stores' CA and server certificate: for 127.0.0.1 only (so ``localhost`` is
    another name)."""
    return server_tls(ips=["127.0.0.1"])


@pytest.fixture(scope="module")
def tls_postgres(
    tmp_path_factory: pytest.TempPathFactory, certs: ServerTLS
) -> Iterator[TlsPostgres]:
    cluster = TlsPostgres(tmp_path_factory.mktemp("pg-tls"), certs).start()
    yield cluster
    cluster.stop()


@pytest.fixture
def tls_redis(tmp_path: Path, certs: ServerTLS) -> Iterator[TlsRedis]:
    with TlsRedis(tmp_path / "redis", certs.write(tmp_path / "tls")) as server:
        yield server


@pytest.fixture
def other_ca(tmp_path: Path) -> Path:
    """A CA file of a CA that signed nothing here."""
    path = tmp_path / "other-ca.crt"
    path.write_bytes(CertificateAuthority("another CA").cert)
    return path


def encrypted_sessions(cluster: TlsPostgres, database: str) -> list[tuple[bool, str]]:
    """(ssl, TLS version) of every client session on ``database``, from ``pg_stat_ssl``."""
    dsn, tls = postgres_tls(cluster.tls_url("postgres", cluster.tls / "ca.crt"))

    async def read() -> list[tuple[bool, str]]:
        conn = await asyncpg.connect(dsn, ssl=tls)
        try:
            rows = await conn.fetch(
                "SELECT s.ssl, coalesce(s.version, '') AS version FROM pg_stat_ssl s"
                " JOIN pg_stat_activity a USING (pid) WHERE a.datname = $1",
                database,
            )
        finally:
            await conn.close()
        return [(bool(r["ssl"]), str(r["version"])) for r in rows]

    return asyncio.run(read())


def test_orders_reach_analytics_over_tls_to_both_stores_and_every_session_is_encrypted(
    tls_postgres: TlsPostgres, tls_redis: TlsRedis, tmp_path: Path
) -> None:
    database_url = tls_postgres.create_database()
    name = urlsplit(database_url).path.lstrip("/")
    sim_port, api_port = free_port(), free_port()
    sim, api = f"http://127.0.0.1:{sim_port}", f"http://127.0.0.1:{api_port}"
    env = {"TRACKRELAY_REDIS_URL": tls_redis.url, "TRACKRELAY_DATA_DIR": str(tmp_path / "d")}
    procs = [spawn_role(["analytics-sim", "--port", str(sim_port)], {}, tmp_path / "sim.log")]
    try:
        # migrations, the raw insert pool, the engine and the relay: all on these URLs
        orders_env = {**env, "TRACKRELAY_DATABASE_URL": database_url}
        orders_env["TRACKRELAY_DB_POOL_SIZE"] = "2"
        procs.append(
            spawn_role(["orders", "--port", str(api_port)], orders_env, tmp_path / "o.log")
        )
        forwarder_env = {**env, "TRACKRELAY_ANALYTICS_URL": sim}
        procs.append(spawn_role(["forwarder"], forwarder_env, tmp_path / "f.log"))
        wait_http(f"{sim}/healthz", 30, procs[0])
        wait_http(f"{api}/readyz", 60, procs[1])
        for n in range(10):
            post(api, {**ORDER, "items": [{"sku": f"sku-{n}", "qty": 1, "price": 5}] * 2})
        wait_for(lambda: state(sim)["lines"] == 20, 60, "every order line counted")
        wait_for(lambda: lag(tls_redis.url) == 0, 30, "the queue drained")
        sessions = encrypted_sessions(tls_postgres, name)
        # the raw pool's two and the engine's (reads, the relay) at least
        assert len(sessions) >= 3, sessions
        assert all(ssl_on and version.startswith("TLSv1.") for ssl_on, version in sessions), (
            sessions
        )
        seen = asyncio.run(observe_as(tls_redis.url))  # what the operator reads
        assert seen.queue_bytes is not None
        assert [f.name for f in seen.forwarders] != []
    finally:
        stop_all(procs)


async def _ping_redis(url: str) -> None:
    r = client.connect(url, timeout=2)
    try:
        await r.ping()
    finally:
        await r.aclose()


def test_redis_refuses_plain_text_and_clients_refuse_another_ca_or_name(
    tls_redis: TlsRedis, other_ca: Path
) -> None:
    asyncio.run(_ping_redis(tls_redis.url))  # the right CA and name: answered
    with pytest.raises(redis.exceptions.ConnectionError, match="certificate verify failed"):
        asyncio.run(_ping_redis(tls_redis.url_with(other_ca)))
    ca = tls_redis.tls / "ca.crt"
    with pytest.raises(redis.exceptions.ConnectionError, match="mismatch"):
        asyncio.run(_ping_redis(tls_redis.url_with(ca, host="localhost")))
    with pytest.raises(redis.exceptions.ConnectionError):
        asyncio.run(_ping_redis(f"redis://127.0.0.1:{tls_redis.port}/0"))


def test_a_redis_that_requires_client_certificates_admits_the_url_that_presents_one(
    tmp_path: Path, certs: ServerTLS
) -> None:
    tls = certs.write(tmp_path / "tls")
    user = certs.ca.issue(common_name="relay", client=True)
    (tls / "client.crt").write_bytes(user.cert)
    (tls / "client.key").write_bytes(user.key)
    with TlsRedis(tmp_path / "redis", tls, auth_clients="yes") as server:
        asyncio.run(_ping_redis(server.admin_url))  # ssl_certfile + ssl_keyfile
        with pytest.raises(redis.exceptions.ConnectionError):
            asyncio.run(_ping_redis(server.url))  # the CA only: no certificate to show


async def _ping_postgres(url: str) -> None:
    engine = database.make_engine(url.replace("postgresql://", "postgresql+asyncpg://"))
    try:
        await database.ping(engine)
    finally:
        await engine.dispose()
    writer = await PgOrderWriter.open(url, size=1, timeout=5)
    await writer.close()


def test_postgresql_refuses_plain_text_and_clients_refuse_another_ca_or_name(
    tls_postgres: TlsPostgres, other_ca: Path
) -> None:
    ca = tls_postgres.tls / "ca.crt"
    asyncio.run(_ping_postgres(tls_postgres.tls_url("postgres", ca)))  # both pools answered
    with pytest.raises(ssl.SSLCertVerificationError, match="certificate verify failed"):
        asyncio.run(_ping_postgres(tls_postgres.tls_url("postgres", other_ca)))
    with pytest.raises(ssl.SSLCertVerificationError, match="mismatch"):
        asyncio.run(_ping_postgres(tls_postgres.tls_url("postgres", ca, host="localhost")))
    # verify-ca checks the CA but not the name: the same connection is admitted
    asyncio.run(
        _ping_postgres(tls_postgres.tls_url("postgres", ca, host="localhost", mode="verify-ca"))
    )
    plain = f"postgresql://postgres@127.0.0.1:{tls_postgres.port}/postgres?sslmode=disable"
    with pytest.raises(Exception, match="no encryption"):
        asyncio.run(_ping_postgres(plain))


@pytest.mark.parametrize(
    ("variable", "value", "named"),
    [
        ("TRACKRELAY_DATABASE_URL", "postgresql://u@127.0.0.1/db?sslmode=verify-al", "sslmode"),
        (
            "TRACKRELAY_DATABASE_URL",
            "postgresql://u@127.0.0.1/db?sslmode=verify-full&sslrootcert=/nowhere/ca.crt",
            "sslrootcert",
        ),
        (
            "TRACKRELAY_REDIS_URL",
            "rediss://127.0.0.1:1/0?ssl_ca_certs=/nowhere/ca.crt",
            "ssl_ca_certs",
        ),
    ],
)
def test_a_bad_tls_setting_stops_the_start_with_one_line_naming_it(
    variable: str, value: str, named: str, tmp_path: Path
) -> None:
    setting = variable.removeprefix("TRACKRELAY_").lower()
    env = {"TRACKRELAY_DATA_DIR": str(tmp_path), "TRACKRELAY_REDIS_URL": "redis://127.0.0.1:1/0"}
    done = run_cli(["orders", "--port", "0"], {**env, variable: value})
    assert done.returncode == 2, done.stderr
    assert f"{setting}: " in done.stderr and named in done.stderr, done.stderr
    assert "Traceback" not in done.stderr, done.stderr
