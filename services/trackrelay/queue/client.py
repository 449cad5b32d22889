"""Queue Redis clients: bounded socket timeouts, keepalive, health checks, and a start check.

A half-open connection (peer gone without a FIN) must fail within
``timeout`` seconds instead of hanging a lane; keepalive and the health-check
interval find dead idle connections. ``check_queue_redis`` refuses a Redis whose
eviction policy could delete the stream.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from trackrelay.runtime.errors import StartupError, describe
from trackrelay.runtime.redact import redact_url

log = logging.getLogger(__name__)

Queue = Redis
"""The queue connection every ``trackrelay.queue`` function takes. Outside this package
it is a handle to pass back in: the commands themselves are issued here."""

QueueError = RedisError
"""Any failure of the queue's Redis: connection lost or refused, a timeout, an error reply."""

QueueReplyError = ResponseError
"""Redis answered with an error (a missing consumer group, a script refusing)."""


class QueueRedisRefused(RuntimeError):
    """The queue Redis is configured so that it could lose queued events."""


def connect(url: str, timeout: float = 5.0) -> Redis:
    """A client whose every command fails within ``timeout`` seconds on a dead peer."""
    return Redis.from_url(
        url,
        socket_timeout=timeout,
        socket_connect_timeout=min(timeout, 2.0),
        socket_keepalive=True,
        health_check_interval=15,
    )


@dataclass(frozen=True, slots=True)
class RedisDurability:
    policy: str | None
    appendonly: str | None
    appendfsync: str | None

    def refusal(self) -> str | None:
        """Why the queue must not run on this Redis, or None (an unreadable config passes)."""
        if self.policy is None or self.policy == "noeviction":
            return None
        return (
            f"the queue Redis has maxmemory-policy {self.policy}: an eviction policy can "
            "delete the event stream; set maxmemory-policy noeviction (trackrelay sheds "
            "analytics data itself before the memory limit)"
        )

    def describe(self) -> str:
        if self.policy is None:
            return "configuration not readable (CONFIG disabled); make sure it is noeviction"
        aof = "off" if self.appendonly != "yes" else f"on, appendfsync {self.appendfsync}"
        return f"maxmemory-policy {self.policy}, AOF {aof}"


async def check_queue_redis(redis: Redis) -> RedisDurability:
    """Read the eviction and AOF settings; refuse anything but ``noeviction``."""
    try:
        raw = await redis.config_get("maxmemory-policy")
        raw.update(await redis.config_get("append*"))
    except ResponseError:  # managed Redis often renames or disables CONFIG
        found = RedisDurability(None, None, None)
        log.warning("queue redis: %s", found.describe())
        return found
    values = {_text(k): _text(v) for k, v in raw.items()}
    found = RedisDurability(
        values.get("maxmemory-policy"), values.get("appendonly"), values.get("appendfsync")
    )
    refusal = found.refusal()
    if refusal is not None:
        raise QueueRedisRefused(refusal)
    log.info("queue redis: %s", found.describe())
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
    except (RedisError, OSError) as exc:
        message = f"cannot reach the queue redis at {redact_url(redis_url)}: {describe(exc)}"
        if required:
            raise StartupError(message) from exc
        log.warning("%s; orders are accepted meanwhile and the relay retries", message)
    finally:
        await redis.aclose()
