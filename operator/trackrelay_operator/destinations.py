"""Where a pipeline may make the operator connect: its URLs' hosts against an allow-list.

Whoever may create an AnalyticsPipeline names the URLs the operator then requests
(the health probe, Prometheus) and the Redis it reads: without a check, that
makes the operator a confused deputy, reaching from inside the cluster any
address its network can (a cloud metadata service, the API server, another
tenant's database). The operator connects only to hosts the allow-list admits;
by default the cluster's Services.

A pattern is a host name matched label by label: ``*`` is any one DNS label (a
letter first, then letters, digits and hyphens), so ``*.shop.svc`` is any Service of
namespace ``shop`` by its cluster name; ``**`` admits every host (the opt-out). A
pattern without ``*`` names one host. An IP address (in any form a resolver reads as
one: ``2852039166``, ``0x7f000001``, ``[::1]``) is admitted only by a pattern naming
that address, and a host outside ASCII is refused (IDNA could map it onto another).
Case and a trailing dot do not count. An allowed Service name can still lead
elsewhere (an ExternalName Service is a CNAME): keep the list to namespaces whose
Services you trust. Pure: no I/O.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import urllib.parse
from collections.abc import Iterable

from trackrelay_operator.spec import Pipeline

DEFAULT_ALLOWED = ("*.*.svc", "*.*.svc.cluster.local")
"""The cluster's Services by their cluster names (the chart narrows it to the release's
namespace when the operator watches only that one). A short name is not admitted: it
resolves through the operator pod's search domains, not the pipeline's namespace."""

ANY = "**"


class DestinationRefused(ValueError):
    """A URL of the spec (or its Redis Secret) names a host the operator may not reach."""


_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
"""A DNS-1035 label: what a Service or namespace name is."""


def as_address(host: str) -> str | None:
    """``host`` as a normalised IP address when a resolver would read it as one, else None."""
    bare = host.strip("[]")
    try:
        return str(ipaddress.ip_address(bare))
    except ValueError:
        pass
    if ":" in bare:
        return bare  # an IPv6 form ipaddress does not take: never a name
    try:  # the forms inet_aton (and so getaddrinfo) takes: 2852039166, 0x7f.1, 010.0.0.1
        return socket.inet_ntoa(socket.inet_aton(bare))
    except OSError:
        return None


def admits(pattern: str, host: str) -> bool:
    """``host`` matches ``pattern`` (``*``: one DNS label; ``**``: any host)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == ANY:
        return True
    address = as_address(host)
    if address is not None:
        return as_address(pattern) == address
    want, have = pattern.split("."), host.split(".")
    return len(want) == len(have) and all(
        w == h or (w == "*" and _LABEL.fullmatch(h) is not None)
        for w, h in zip(want, have, strict=True)
    )


def host_of(url: str) -> str:
    """The host a URL names; ``ValueError`` when it names none."""
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if not host:
        raise ValueError("names no host")
    if not host.isascii():
        raise ValueError(f"host {host!r} is not ASCII (IDNA could make it another)")
    return host


def refusal(where: str, url: str, allowed: Iterable[str]) -> str | None:
    """Why the operator must not connect to ``url`` (``where`` names the field), or None."""
    patterns = tuple(allowed)
    try:
        host = host_of(url)
    except ValueError as exc:
        return f"{where}: {exc}"
    if any(admits(p, host) for p in patterns):
        return None
    listed = ", ".join(patterns) or "nothing"
    return (
        f"{where}: host {host!r} is not an allowed destination of this operator ({listed};"
        " the chart's operator.allowedHosts, the operator's --allow-host)"
    )


def check(urls: Iterable[tuple[str, str]], allowed: Iterable[str]) -> None:
    """``DestinationRefused`` naming every (field, URL) whose host is not allowed."""
    patterns = tuple(allowed)
    problems = [p for where, url in urls if (p := refusal(where, url, patterns)) is not None]
    if problems:
        raise DestinationRefused("; ".join(problems))


def urls_of(pipeline: Pipeline) -> list[tuple[str, str]]:
    """The URLs a pipeline's spec makes the operator request, by field."""
    urls = []
    if pipeline.health_url is not None:
        urls.append(("spec.analytics.healthURL", pipeline.health_url))
    if pipeline.prometheus is not None:
        urls.append(("spec.analytics.prometheus.address", pipeline.prometheus.address))
    return urls
