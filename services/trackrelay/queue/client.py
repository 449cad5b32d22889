"""Queue Redis clients: bounded socket timeouts, keepalive, health checks, and a start check.

A half-open connection (peer gone without a FIN) must fail within
``timeout`` seconds instead of hanging a lane; keepalive and the health-check
interval find dead idle connections. ``check_queue_redis`` refuses a Redis whose
eviction policy could delete the stream.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.asyncio.sentinel import Sentinel
from redis.exceptions import (
    OutOfMemoryError,
    RedisClusterException,
    RedisError,
    ResponseError,
)

from trackrelay.config.tls import check_redis_url, cluster_url, sentinel_target
from trackrelay.queue import legacy
from trackrelay.queue.handle import Queue as Queue
from trackrelay.queue.keys import STREAM
from trackrelay.runtime.errors import StartupError, describe
from trackrelay.runtime.redact import redact_url

log = logging.getLogger(__name__)


QueueError = (RedisError, RedisClusterException)
"""Any failure of the queue's Redis: connection lost or refused, a timeout, an error reply
(for ``except``). redis-py's cluster client says it could reach no node, or that the
cluster does not cover every slot, with a ``RedisClusterException``, which is no
``RedisError``."""

QueueReplyError = ResponseError
"""Redis answered with an error (a missing consumer group, a script refusing)."""

QueueFullError = OutOfMemoryError
"""Redis is at its ``maxmemory`` and refused a command that could grow it (``OOM ...``)."""


_SET_SMALL = """#!lua flags=allow-oom
if ARGV[2] == '' then
  redis.call('SET', KEYS[1], ARGV[1])
else
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


async def set_small(redis: Queue, key: str, value: str, ttl: float | None = None) -> None:
    """SET for the few small keys that steer the queue (the budget, the shedding policy,
    each process's view), in a script flagged ``allow-oom``: they are still written when
    the queue's Redis is at its ``maxmemory``, which is when they matter most. Events are
    never written this way."""
    px = "" if ttl is None else str(max(1, int(ttl * 1000)))
    await redis.eval(_SET_SMALL, 1, key, value, px)


async def redis_full(redis: Queue, stream: str = STREAM) -> bool:
    """Whether the queue's Redis is at its ``maxmemory`` (``INFO memory``, served when full):
    on a cluster, the node that holds ``stream``."""
    if isinstance(redis, RedisCluster):
        info = await redis.info("memory", target_nodes=redis.get_node_from_key(stream))
    else:
        info = await redis.info("memory")
    limit = int(info.get("maxmemory", 0))
    return limit > 0 and int(info.get("used_memory", 0)) >= limit


class QueueRedisRefused(RuntimeError):
    """The queue Redis is configured so that it could lose queued events."""


def connect(url: str, timeout: float = 5.0) -> Queue:
    """A client whose every command fails within ``timeout`` seconds on a dead peer.

    ``redis+cluster://host:port`` (``rediss+cluster://`` with TLS) names a Redis Cluster
    by any of its nodes: the client learns the others and follows slots that move.
    ``redis+sentinel://host:port[,host:port]/service`` names a primary/replica pair by its
    Sentinels: the client asks them for the primary, again after a failover. TLS is
    the URL's (``rediss://...?ssl_ca_certs=...``, which ``from_url`` reads); its files are
    checked here, so a wrong one is a ``ValueError`` naming the parameter."""
    cluster = cluster_url(url)
    check_redis_url(url)
    options: dict[str, Any] = {
        "socket_timeout": timeout,
        "socket_connect_timeout": min(timeout, 2.0),
        "socket_keepalive": True,
        "health_check_interval": 15,
    }
    if cluster is not None:
        return RedisCluster.from_url(cluster, **options)
    target = sentinel_target(url)
    if target is not None:
        sentinels = Sentinel(target.sentinels, socket_timeout=min(timeout, 2.0))  # type: ignore[no-untyped-call]
        # Whichever node the Sentinels name the primary: asked again on each reconnect,
        # so a failover is followed (a read-only or vanished node drops the connection).
        primary: Redis = sentinels.master_for(
            target.service,
            db=target.db,
            username=target.username,
            password=target.password,
            **options,
        )
        return primary
    return Redis.from_url(url, **options)


@dataclass(frozen=True, slots=True)
class RedisDurability:
    policy: str | None
    appendonly: str | None
    appendfsync: str | None

    def refusal(self, node: str = "") -> str | None:
        """Why the queue must not run on this Redis (``node``: which, on a cluster), or None
        (an unreadable config passes)."""
        if self.policy is None or self.policy == "noeviction":
            return None
        return (
            f"the queue Redis{node} has maxmemory-policy {self.policy}: an eviction policy can "
            "delete the event stream; set maxmemory-policy noeviction (trackrelay sheds "
            "analytics data itself before the memory limit)"
        )

    def describe(self) -> str:
        if self.policy is None:
            return "configuration not readable (CONFIG disabled); make sure it is noeviction"
        aof = "off" if self.appendonly != "yes" else f"on, appendfsync {self.appendfsync}"
        return f"maxmemory-policy {self.policy}, AOF {aof}"


MIN_REDIS = (7, 0)
"""The queue's scripts declare flags (``#!lua flags=allow-oom``), which Redis reads from 7.0."""


def version_refusal(version: str) -> str | None:
    """Why a Redis of ``version`` cannot hold the queue, or None."""
    try:
        found = tuple(int(part) for part in version.split(".")[:2])
    except ValueError:
        return None  # a fork that names its version otherwise: its scripts will tell
    if found >= MIN_REDIS:
        return None
    need = ".".join(map(str, MIN_REDIS))
    return f"the queue Redis is {version}; trackrelay needs Redis {need} or later"


async def check_queue_redis(redis: Queue) -> RedisDurability:
    """Refuse a Redis older than ``MIN_REDIS``; read the eviction and AOF settings and
    refuse anything but ``noeviction``; move what it holds under the names before the
    hash tags (``legacy``). On a Redis Cluster every node is checked, replicas too (a
    replica becomes a primary when its primary fails)."""
    if isinstance(redis, RedisCluster):
        await redis.initialize()  # learns the nodes (once)
        found = RedisDurability(None, None, None)
        for node in redis.get_nodes():
            found = await _check_node(
                partial(redis.info, target_nodes=node),
                partial(redis.config_get, target_nodes=node),
                f" node {node.name}",
            )
        return found
    found = await _check_node(redis.info, redis.config_get, "")
    await legacy.migrate(redis)
    return found


async def _check_node(
    info: Callable[[str], Awaitable[Any]], config_get: Callable[[str], Awaitable[Any]], node: str
) -> RedisDurability:
    version = _text((await info("server")).get("redis_version", ""))
    refusal = version_refusal(version)
    if refusal is not None:
        raise QueueRedisRefused(refusal + node)
    try:
        raw = dict(await config_get("maxmemory-policy"))
        raw.update(await config_get("append*"))
    except ResponseError:  # managed Redis often renames or disables CONFIG
        found = RedisDurability(None, None, None)
        log.warning("queue redis%s: %s", node, found.describe())
        return found
    values = {_text(k): _text(v) for k, v in raw.items()}
    found = RedisDurability(
        values.get("maxmemory-policy"), values.get("appendonly"), values.get("appendfsync")
    )
    refusal = found.refusal(node)
    if refusal is not None:
        raise QueueRedisRefused(refusal)
    log.info("queue redis%s: %s", node, found.describe())
    return found


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


async def check_queue(redis_url: str, required: bool) -> None:
    """Refuse a queue Redis that may evict; an unreachable one fails only if ``required``.

    The order service passes ``required=False``: orders never wait for the queue.
    """
    redis = connect(redis_url, timeout=5.0)
    try:
        await check_queue_redis(redis)
    except (*QueueError, OSError) as exc:
        message = f"cannot reach the queue redis at {redact_url(redis_url)}: {describe(exc)}"
        if required:
            raise StartupError(message) from exc
        log.warning("%s; orders are accepted meanwhile and the relay retries", message)
    finally:
        await redis.aclose()
