"""Where a pipeline may make the operator connect: its URLs' hosts against an allow-list.

Whoever may create an AnalyticsPipeline names the URLs the operator then requests
(the health probe, Prometheus) and the Redis it reads: without a check, that
makes the operator a confused deputy, reaching from inside the cluster any
address its network can (a cloud metadata service, the API server, another
tenant's database). The operator connects only to hosts the allow-list admits;
by default the cluster's Services.

A pattern is a host name matched label by label: ``*`` is any one label, so
``*.*.svc`` is a Service by its cluster name and a lone ``*`` a Service by its
short name (in the pipeline's namespace); ``**`` admits every host (the opt-out). A
pattern without ``*`` names one host (an IP address, say). Case does not count.
Pure: no I/O.
"""

from __future__ import annotations

import urllib.parse
from collections.abc import Iterable

from trackrelay_operator.spec import Pipeline

DEFAULT_ALLOWED = ("*", "*.*.svc", "*.*.svc.cluster.local")
"""The cluster's Services: by short name, ``name.namespace.svc`` and the full name."""

ANY = "**"


class DestinationRefused(ValueError):
    """A URL of the spec (or its Redis Secret) names a host the operator may not reach."""


def admits(pattern: str, host: str) -> bool:
    """``host`` matches ``pattern`` (``*``: one label; ``**``: any host)."""
    pattern, host = pattern.lower().rstrip("."), host.lower().rstrip(".")
    if pattern == ANY:
        return True
    want, have = pattern.split("."), host.split(".")
    return len(want) == len(have) and all(
        w == h or (w == "*" and h != "") for w, h in zip(want, have, strict=True)
    )


def host_of(url: str) -> str:
    """The host a URL names; ``ValueError`` when it names none."""
    try:
        host = urllib.parse.urlsplit(url).hostname
    except ValueError as exc:
        raise ValueError(f"not a URL ({exc})") from None
    if not host:
        raise ValueError("names no host")
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
