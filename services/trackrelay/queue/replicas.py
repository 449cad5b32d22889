"""Waiting for the queue's replicas before outbox rows are deleted (Redis ``WAIT``).

A primary acknowledges a write before its replicas have it; a primary that dies then
takes the write with it, and a failover promotes a replica without it. Events whose
outbox rows the relay deleted on that acknowledgement would be lost. With
``queue_replicas`` set, every script that adds events (a publish, the quota's admit,
fold and flush) is followed, before it returns, by a marker write and ``WAIT`` on one
connection: the marker is written after the script's reply, so its replication offset
is past the script's, and ``WAIT`` counting the replicas that have the marker counts
those that have the script's events. Only then does the relay delete the rows.

A linked replica that does not confirm within ``queue_replica_timeout`` (stalled,
slow) is waited for again, ``WAIT`` after ``WAIT``: the rows stay in the outbox
meanwhile (orders are still accepted), and nothing is written twice. Past
``queue_replica_wait_max`` the rows are deleted unconfirmed, counted and logged. With
fewer replicas linked than waited for (one died, or the primary is a promoted replica
alone) batches are not waited for until they are back: no replica could be promoted
either, and delivery must not stop.

Standalone and Sentinel only: ``WAIT`` names no key, so a cluster client cannot route
it to the node a script ran on.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from redis.asyncio.cluster import RedisCluster

from trackrelay.queue.handle import Queue

log = logging.getLogger(__name__)

MARKER_KEY = "trackrelay:replicated"
"""Written before each ``WAIT``: the last moment (ms) a batch was replicated."""

_MARK = """#!lua flags=allow-oom
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
"""A marker write that goes through at ``maxmemory`` too (one small key)."""


ABSENT_RECHECK = 1.0
"""Seconds between looks for replicas once fewer than waited for are linked."""


class ReplicasUnsupported(ValueError):
    """Waiting for replicas asked of a queue client that cannot."""


class Replication:
    """How many replicas a batch must reach before its rows are deleted, and what waiting
    for them saw."""

    def __init__(self, replicas: int, timeout: float = 1.0, wait_max: float = 30.0) -> None:
        if replicas < 0 or timeout <= 0 or wait_max < timeout:
            raise ValueError("replicas >= 0, timeout > 0, wait_max >= timeout")
        self.replicas = replicas
        self.timeout = timeout
        self.wait_max = wait_max
        self.confirmed = 0
        """Batches the replicas confirmed."""
        self.unconfirmed = 0
        """Batches whose rows were deleted after ``wait_max`` without the replicas."""
        self.waited = 0.0
        """Seconds spent waiting for replicas, in all."""
        self._absent_until = 0.0

    def check(self, redis: Queue) -> None:
        if self.replicas and isinstance(redis, RedisCluster):
            raise ReplicasUnsupported(
                "queue_replicas needs one Redis or a Sentinel pair: WAIT cannot be routed"
                " to a Redis Cluster node (set queue_replicas to 0)"
            )

    async def wait(self, redis: Queue) -> bool:
        """After a write whose reply came: wait until ``replicas`` have it (True), or
        ``wait_max`` has passed (False). Redis errors are the caller's to handle."""
        if not self.replicas:
            return True
        started = time.monotonic()
        if started < self._absent_until:
            self.unconfirmed += 1  # no replica to wait for: none can be promoted either
            return False
        try:
            while True:
                pipe: Any = redis.pipeline(transaction=False)
                pipe.eval(_MARK, 1, MARKER_KEY, str(int(time.time() * 1000)))
                pipe.execute_command("WAIT", self.replicas, int(self.timeout * 1000))
                _, acked = await pipe.execute()
                if int(acked) >= self.replicas:
                    self.confirmed += 1
                    if self._absent_until:
                        log.warning("queue: the replicas confirm batches again")
                        self._absent_until = 0.0
                    return True
                linked = int((await redis.info("replication")).get("connected_slaves", 0))
                if linked < self.replicas:
                    # Fewer replicas linked than waited for (one died, or the primary is
                    # a promoted replica alone): rows go unconfirmed, looked at again in
                    # ABSENT_RECHECK, rather than each batch waiting wait_max for none.
                    if not self._absent_until:
                        log.warning(
                            "queue: %d of %d replicas linked to the primary; batches are"
                            " not waited for until they are",
                            linked,
                            self.replicas,
                        )
                    self._absent_until = time.monotonic() + ABSENT_RECHECK
                    self.unconfirmed += 1
                    return False
                if time.monotonic() - started >= self.wait_max:
                    self.unconfirmed += 1
                    log.warning(
                        "queue: %d of %d replicas confirmed a batch in %.0f s; its outbox"
                        " rows are deleted unconfirmed",
                        int(acked),
                        self.replicas,
                        self.wait_max,
                    )
                    return False
        finally:
            self.waited += time.monotonic() - started
