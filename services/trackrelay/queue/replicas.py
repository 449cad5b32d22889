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
``queue_replica_wait_max`` the rows are deleted unconfirmed, counted and logged. A
replica whose link dropped is waited for the same way: one unlinked a moment ago may
still be promoted (Redis Cluster and Sentinel promote a replica that lost its link a
while before the primary died). Once fewer replicas than waited for have been linked
for ``queue_replica_wait_max`` (one died, or the primary is a promoted replica alone),
batches are not waited for until they are back: delivery pauses at most that long.

On a Redis Cluster the marker is the shard's own key (``Shard.replicated``, the
shard's hash tag), sent with ``WAIT`` on this process's own connection to the node
that serves that slot, so ``WAIT`` counts that primary's replicas that have the
shard's scripts. Each node's
replicas are counted apart (one primary's replica missing does not stop waiting on
another's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from redis.asyncio.cluster import ClusterNode, RedisCluster
from redis.asyncio.connection import Connection
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisClusterException

from trackrelay.queue.handle import Queue
from trackrelay.queue.keys import SHARD0, Shard

log = logging.getLogger(__name__)

_MARK = """#!lua flags=allow-oom
redis.call('SET', KEYS[1], ARGV[1])
return 1
"""
"""A marker write that goes through at ``maxmemory`` too (one small key)."""


ABSENT_RECHECK = 1.0
"""Seconds between looks for replicas once they have been missing ``wait_max``."""


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
        self._missing_since: dict[str, float] = {}
        """Per primary (its node's name; "" for one Redis): since when fewer replicas than
        waited for have been linked to it."""
        self._next_look: dict[str, float] = {}
        """Per primary whose replicas have been missing ``wait_max``: when to look again."""
        self._connections: dict[tuple[str, int], Connection] = {}
        """On a cluster: one connection a primary and shard, the marker and ``WAIT`` sent
        on it."""
        self._locks: dict[tuple[str, int], asyncio.Lock] = {}

    def _gone(self, primary: str, now: float) -> bool:
        """The primary's replicas have been missing ``wait_max``: a replica away that long
        is no longer waited for (one promoted alone has none; a dead one is not back)."""
        since = self._missing_since.get(primary)
        return since is not None and now - since >= self.wait_max

    async def wait(self, redis: Queue, shard: Shard = SHARD0) -> bool:
        """After a write to ``shard`` whose reply came: wait until ``replicas`` of the
        shard's primary have it (True), or ``wait_max`` has passed (False). Redis errors
        are the caller's to handle."""
        if not self.replicas:
            return True
        started = time.monotonic()
        primary = ""
        node: ClusterNode | None = None
        if isinstance(redis, RedisCluster):
            node = redis.get_node_from_key(shard.replicated)
            if node is None:
                raise RedisClusterException(f"no node serves {shard.replicated!r}")
            primary = node.name
        if self._gone(primary, started) and started < self._next_look.get(primary, 0.0):
            self.unconfirmed += 1
            return False
        try:
            while True:
                stamp = str(int(time.time() * 1000))
                mark = ("EVAL", _MARK, 1, shard.replicated, stamp)
                ask = ("WAIT", self.replicas, int(self.timeout * 1000))
                if node is not None:
                    _, acked = await self._on_node(node, shard, [mark, ask])
                else:
                    pipe: Any = redis.pipeline(transaction=False)
                    pipe.execute_command(*mark)
                    pipe.execute_command(*ask)
                    _, acked = await pipe.execute()
                if int(acked) >= self.replicas:
                    self.confirmed += 1
                    if self._missing_since.pop(primary, None) is not None:
                        self._next_look.pop(primary, None)
                        log.warning("queue: the replicas confirm batches again%s", _at(primary))
                    return True
                now = time.monotonic()
                if node is not None:
                    (info,) = await self._on_node(node, shard, [_INFO])
                else:
                    info = await redis.info("replication")
                linked = _linked(info)
                if linked < self.replicas and primary not in self._missing_since:
                    # A replica unlinked a moment ago may still be promoted (Redis
                    # Cluster and Sentinel both promote one that lost its link a while
                    # ago): it is waited for like one linked, up to wait_max.
                    self._missing_since[primary] = now
                    log.warning(
                        "queue: %d of %d replicas linked to the primary%s; batches wait"
                        " for them up to %.0f s",
                        linked,
                        self.replicas,
                        _at(primary),
                        self.wait_max,
                    )
                if linked < self.replicas and self._gone(primary, now):
                    if primary not in self._next_look:
                        log.warning(
                            "queue: the replicas of the primary%s have been missing %.0f s;"
                            " batches are not waited for until they are back",
                            _at(primary),
                            self.wait_max,
                        )
                    self._next_look[primary] = now + ABSENT_RECHECK
                    self.unconfirmed += 1
                    return False
                if now - started >= self.wait_max:
                    self.unconfirmed += 1
                    log.warning(
                        "queue: %d of %d replicas%s confirmed a batch in %.0f s; its outbox"
                        " rows are deleted unconfirmed",
                        int(acked),
                        self.replicas,
                        _at(primary),
                        self.wait_max,
                    )
                    return False
        finally:
            self.waited += time.monotonic() - started

    async def _on_node(
        self, node: ClusterNode, shard: Shard, commands: list[tuple[Any, ...]]
    ) -> list[Any]:
        """``commands`` on this process's own connection to a cluster node (one a shard,
        so shards on one node wait side by side), in order, with no retry: the cluster
        client's pipeline would send a retried ``WAIT`` (no key) to every primary and sum
        their replies, and another connection's ``WAIT`` counts none of the marker's
        writes."""
        key = (node.name, shard.number)
        async with self._locks.setdefault(key, asyncio.Lock()):
            connection = self._connections.get(key)
            if connection is None:
                kwargs = {**node.connection_kwargs, "retry": Retry(NoBackoff(), 0)}
                connection = node.connection_class(**kwargs)
                self._connections[key] = connection
            try:
                await connection.send_packed_command(connection.pack_commands(commands))
                return [await connection.read_response() for _ in commands]
            except BaseException:
                # a reply may be left unread: the next batch starts on a new connection
                self._connections.pop(key, None)
                await connection.disconnect()
                raise

    async def aclose(self) -> None:
        """Close the connections to cluster nodes (none for one Redis)."""
        connections, self._connections = list(self._connections.values()), {}
        for connection in connections:
            await connection.disconnect()


_INFO = ("INFO", "replication")


def _linked(info: Any) -> int:
    """``connected_slaves`` from ``INFO replication``, parsed by redis-py or raw."""
    if isinstance(info, dict):
        return int(info.get("connected_slaves", 0))
    text = info.decode() if isinstance(info, bytes) else str(info)
    for line in text.splitlines():
        if line.startswith("connected_slaves:"):
            return int(line.split(":", 1)[1])
    return 0


def _at(primary: str) -> str:
    """`` at <node>`` on a cluster, nothing for one Redis."""
    return f" at {primary}" if primary else ""
