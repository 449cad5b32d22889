"""TLS to the stores, read from their URLs: the URL is the one place that says how to connect.

Redis: ``rediss://user:pw@host:6379/0?ssl_ca_certs=/tls/ca.crt`` (optionally
``&ssl_certfile=...&ssl_keyfile=...``) is redis-py's own form, which ``Redis.from_url``
reads; hostnames are checked (``ssl_check_hostname`` is on by default). PostgreSQL:
libpq's ``?sslmode=verify-full&sslrootcert=/tls/ca.crt`` (optionally ``&sslcert=...&sslkey=...``),
which SQLAlchemy's asyncpg dialect would hand to ``asyncpg.connect`` as unknown keywords:
``postgres_tls`` takes them off the URL and makes the one ``ssl`` argument asyncpg takes.
Both check their files when a process starts (``check_redis_url``, ``postgres_tls``), so a
wrong path or mode is one line naming the parameter, not a failure deep in a driver.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

PG_SSL_PARAMS = ("sslmode", "sslrootcert", "sslcert", "sslkey")
"""The libpq parameters ``postgres_tls`` reads; any other query parameter stays in the URL."""
PG_SSLMODES = ("disable", "allow", "prefer", "require", "verify-ca", "verify-full")
PG_VERIFYING = ("require", "verify-ca", "verify-full")
"""The modes that take certificate files (``require`` with ``sslrootcert`` is ``verify-ca``,
as in libpq)."""

REDIS_SSL_FILES = ("ssl_ca_certs", "ssl_certfile", "ssl_keyfile")
REDIS_CERT_REQS = ("none", "optional", "required")

SslArgument = ssl.SSLContext | str
"""What asyncpg's ``ssl=`` takes: a context, or a mode it implements itself."""


def _query(url: str) -> list[tuple[str, str]]:
    return parse_qsl(urlsplit(url).query, keep_blank_values=True)


def _context(
    ca: tuple[str, str] | None, cert: tuple[str, str] | None, key: tuple[str, str] | None
) -> ssl.SSLContext:
    """A client context verifying against ``ca`` (``(parameter, path)``) and presenting
    ``cert``/``key``; ``ValueError`` naming the parameter whose file cannot be used."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    if ca is not None:
        try:
            context.load_verify_locations(cafile=ca[1])
        except (OSError, ssl.SSLError) as exc:
            raise ValueError(f"{ca[0]}: cannot read a CA certificate from {ca[1]}: {exc}") from None
    if key is not None and cert is None:
        raise ValueError(f"{key[0]} is given without {_cert_name(key[0])}")
    if cert is not None:
        try:
            context.load_cert_chain(cert[1], key[1] if key else None)
        except (OSError, ssl.SSLError) as exc:
            names = f"{cert[0]}/{key[0]}" if key else cert[0]
            raise ValueError(
                f"{names}: cannot read a client certificate and key from {cert[1]}"
                f"{f' and {key[1]}' if key else ''}: {exc}"
            ) from None
    return context


def _cert_name(key_param: str) -> str:
    return "sslcert" if key_param == "sslkey" else "ssl_certfile"


def postgres_tls(url: str) -> tuple[str, SslArgument | None]:
    """``url`` without its libpq TLS parameters, and what asyncpg's ``ssl=`` should be
    (None: no parameter given, asyncpg's default). ``ValueError`` naming the parameter
    for an unknown ``sslmode``, a file that cannot be read, or files with a mode that
    does not use them."""
    parts = urlsplit(url)
    query = _query(url)
    given = {name: value for name, value in query if name in PG_SSL_PARAMS}
    if not given:
        return url, None
    rest = [(name, value) for name, value in query if name not in PG_SSL_PARAMS]
    bare = urlunsplit(parts._replace(query=urlencode(rest)))
    mode = given.get("sslmode", "prefer")
    if mode not in PG_SSLMODES:
        raise ValueError(f"sslmode {mode!r} is not one of {', '.join(PG_SSLMODES)}")
    files = [name for name in PG_SSL_PARAMS[1:] if name in given]
    if mode not in PG_VERIFYING:
        if files:
            raise ValueError(
                f"{', '.join(files)} given with sslmode {mode}: certificates are used only "
                f"with sslmode {', '.join(PG_VERIFYING)}"
            )
        return bare, mode
    if mode in ("verify-ca", "verify-full") and "sslrootcert" not in given:
        raise ValueError(f"sslmode {mode} needs sslrootcert (the CA file to verify against)")

    def of(name: str) -> tuple[str, str] | None:
        return (name, given[name]) if name in given else None

    context = _context(of("sslrootcert"), of("sslcert"), of("sslkey"))
    context.check_hostname = mode == "verify-full"
    if "sslrootcert" not in given:  # require: encrypted, nothing verified (libpq's meaning)
        context.verify_mode = ssl.CERT_NONE
    return bare, context


CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}
"""URL schemes that name a Redis Cluster (any of its nodes), and the scheme each stands for."""


def cluster_url(url: str) -> str | None:
    """``url`` as redis-py's cluster client reads it, when it names a Redis Cluster."""
    scheme, sep, rest = url.partition("://")
    plain = CLUSTER_SCHEMES.get(scheme.lower()) if sep else None
    return None if plain is None else f"{plain}://{rest}"


SENTINEL_SCHEME = "redis+sentinel"
"""The URL scheme that names a primary/replica pair by its Sentinels."""


@dataclass(frozen=True, slots=True)
class SentinelTarget:
    """A primary found through Sentinel: ``redis+sentinel://[user:pw@]host:port[,host:port
    ...]/service[/db]``. The credentials are the primary's; the Sentinels take none."""

    sentinels: list[tuple[str, int]]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None


def sentinel_target(url: str) -> SentinelTarget | None:
    """The Sentinels and service a ``redis+sentinel://`` URL names (None: another scheme);
    ``ValueError`` saying what is wrong with one that cannot work."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in (SENTINEL_SCHEME, "rediss+sentinel"):
        return None
    if scheme.lower() != SENTINEL_SCHEME:
        raise ValueError("rediss+sentinel:// is not supported: Sentinel runs in plain text here")
    # The credentials end at the last "@" (a raw password may hold "/" or "@"); the
    # Sentinels' addresses, then the path, follow.
    auth, at, after = rest.partition("?")[0].rpartition("@")
    if not at:
        auth, after = "", rest.partition("?")[0]
    hosts, _, path = after.partition("/")
    sentinels = []
    for host in hosts.split(","):
        name, colon, port = host.rpartition(":")
        if not colon or not name or not port.isdigit():
            raise ValueError(f"Sentinel address {host!r} is not host:port")
        sentinels.append((name, int(port)))
    parts = [p for p in path.split("/") if p]
    if not parts or len(parts) > 2 or (len(parts) == 2 and not parts[1].isdigit()):
        raise ValueError(
            "a Sentinel URL names its service: redis+sentinel://host:port/service[/db]"
        )
    user, _, password = auth.partition(":")
    return SentinelTarget(
        sentinels,
        parts[0],
        int(parts[1]) if len(parts) == 2 else 0,
        unquote(user) or None,
        unquote(password) or None,
    )


def check_redis_url(url: str) -> None:
    """``ValueError`` naming the parameter when a Redis URL's TLS parameters cannot work:
    ``ssl_*`` on a plain ``redis://`` URL (redis-py would ignore them), an unknown
    ``ssl_cert_reqs``, or a certificate file that cannot be read. A cluster's URL
    (``rediss+cluster://``) is read as the scheme it stands for."""
    if sentinel_target(url) is not None:
        if any(name.startswith("ssl_") for name, _ in _query(url)):
            raise ValueError("ssl_* given on a redis+sentinel:// URL, which is plain text")
        return
    url = cluster_url(url) or url
    query = dict(_query(url))
    ssl_params = sorted(name for name in query if name.startswith("ssl_"))
    scheme = urlsplit(url).scheme
    if scheme != "rediss":
        if ssl_params:
            raise ValueError(
                f"{', '.join(ssl_params)} given on a {scheme}:// URL, which is plain text: "
                "use rediss://"
            )
        return
    reqs = query.get("ssl_cert_reqs", "required")
    if reqs not in REDIS_CERT_REQS:
        raise ValueError(f"ssl_cert_reqs {reqs!r} is not one of {', '.join(REDIS_CERT_REQS)}")

    def of(name: str) -> tuple[str, str] | None:
        return (name, query[name]) if name in query else None

    _context(of("ssl_ca_certs"), of("ssl_certfile"), of("ssl_keyfile"))
