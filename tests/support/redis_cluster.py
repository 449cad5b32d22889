"""A real Redis Cluster on this machine: ``redis-server --cluster-enabled`` processes, the
slots spread over the primaries, each with its replicas (what the cluster tests and
``benchmarks/shards.py`` run on)."""

from __future__ import annotations

import contextlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Self

import redis

from trackrelay.config.tls import cluster_url
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.runtime.ports import free_port

SyncQueue = redis.Redis | redis.RedisCluster
"""A blocking client of either kind, for tests' own reads and writes."""


def sync_client(url: str) -> SyncQueue:
    """A blocking client for a queue URL, a cluster's (``redis+cluster://``) or one Redis's."""
    cluster = cluster_url(url)
    if cluster is not None:
        return redis.RedisCluster.from_url(cluster, socket_timeout=5)
    return redis.Redis.from_url(url, socket_timeout=5)


SLOTS = 16384
NODE_TIMEOUT_MS = 1000
"""How long a primary may be silent before its replica takes over."""


class _Started:
    """``with``: started on entry, stopped on exit."""

    def start(self) -> Self:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class LocalRedisCluster(_Started):
    """``primaries`` nodes owning the slots in equal ranges, ``replicas`` replicas each."""

    def __init__(
        self,
        data_dir: Path,
        primaries: int = 3,
        replicas: int = 0,
        appendonly: bool = False,
        maxmemory: str | None = None,
    ) -> None:
        options = [
            "--cluster-enabled",
            "yes",
            "--cluster-config-file",
            "nodes.conf",
            "--cluster-node-timeout",
            str(NODE_TIMEOUT_MS),
        ]
        # Each node's bus port is chosen too: the default (its port + 10000) may not exist.
        count = primaries * (1 + replicas)
        self.bus_ports = [free_port() for _ in range(count)]
        self.nodes = [
            EmbeddedRedis(
                data_dir / f"node-{n}",
                appendonly=appendonly,
                maxmemory=maxmemory,
                extra=[*options, "--cluster-port", str(self.bus_ports[n])],
            )
            for n in range(count)
        ]
        self.primaries = primaries

    @property
    def url(self) -> str:
        """The cluster's URL as trackrelay reads it: any one node names the cluster."""
        return f"redis+cluster://127.0.0.1:{self.nodes[0].port}"

    def client(self, n: int) -> redis.Redis:
        return redis.Redis(port=self.nodes[n].port, socket_timeout=5)

    def command(self, n: int, *args: str | int) -> Any:
        """One command to node ``n`` alone (CLUSTER ...), its reply as redis-py parses it."""
        with self.client(n) as r:
            return r.execute_command(*args)

    def start(self, timeout: float = 30.0) -> LocalRedisCluster:
        for node in self.nodes:
            node.start()
        for n in range(1, len(self.nodes)):
            self.command(0, "CLUSTER MEET", "127.0.0.1", self.nodes[n].port, self.bus_ports[n])
        share = SLOTS // self.primaries
        for p in range(self.primaries):
            last = SLOTS - 1 if p == self.primaries - 1 else (p + 1) * share - 1
            self.command(p, "CLUSTER ADDSLOTSRANGE", p * share, last)
        ids = [self.command(p, "CLUSTER MYID").decode() for p in range(self.primaries)]
        everyone = range(len(self.nodes))
        self._wait(lambda: all(self._knows(n, len(self.nodes)) for n in everyone), timeout)
        for n in range(self.primaries, len(self.nodes)):
            self.command(n, "CLUSTER REPLICATE", ids[n % self.primaries])
        self._wait(lambda: all(self._ok(n) for n in everyone), timeout)
        replicas = range(self.primaries, len(self.nodes))
        self._wait(lambda: all(self._linked(n) for n in replicas), timeout)
        return self

    def replica_of(self, primary: EmbeddedRedis) -> EmbeddedRedis:
        """The first replica linked to ``primary`` now."""
        for node in self.nodes:
            if node is primary or node.process is None or node.process.poll() is not None:
                continue
            with contextlib.suppress(redis.RedisError), self.client(self.nodes.index(node)) as r:
                info: dict[str, Any] = r.info("replication")
                if info.get("role") == "slave" and int(info["master_port"]) == primary.port:
                    return node
        raise LookupError(f"no replica of the node at port {primary.port}")

    def _linked(self, n: int) -> bool:
        """Node ``n`` is a replica that has synchronised with its primary."""
        with self.client(n) as r:
            info: dict[str, Any] = r.info("replication")
        return info.get("master_link_status") == "up"

    def _knows(self, n: int, count: int) -> bool:
        known: dict[str, object] = self.command(n, "CLUSTER NODES")
        return len(known) == count

    def _ok(self, n: int) -> bool:
        info: dict[str, object] = self.command(n, "CLUSTER INFO")
        return info.get("cluster_state") == "ok"

    @staticmethod
    def _wait(done: Callable[[], bool], timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if done():
                return
            time.sleep(0.05)
        raise RuntimeError(f"the Redis Cluster did not form in {timeout}s")

    def node_of(self, key: str) -> EmbeddedRedis:
        """The primary that serves ``key``'s slot now."""
        slot = int(self.command(0, "CLUSTER KEYSLOT", key))
        for first, last, primary, *_ in self.command(0, "CLUSTER SLOTS"):
            if first <= slot <= last:
                port = int(primary[1])
                return next(node for node in self.nodes if node.port == port)
        raise LookupError(f"no node serves slot {slot}")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()


QueueServer = EmbeddedRedis | LocalRedisCluster
"""Where a test's queue lives: one Redis, or a cluster of them (both have a ``url``)."""


class LocalSentinelPair(_Started):
    """A primary, its replica and one Sentinel watching them (quorum 1), as
    ``redis+sentinel://`` names them: the Sentinel makes the replica the primary once
    the primary has been silent ``down_after_ms``."""

    SERVICE = "trackrelay"

    def __init__(self, data_dir: Path, down_after_ms: int = 1000) -> None:
        self.primary = EmbeddedRedis(data_dir / "primary", appendonly=False)
        self.replica = EmbeddedRedis(
            data_dir / "replica",
            appendonly=False,
            extra=["--replicaof", "127.0.0.1", str(self.primary.port)],
        )
        self.sentinel_port = free_port()
        self.conf = data_dir / "sentinel.conf"
        self.down_after_ms = down_after_ms
        self.sentinel: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis+sentinel://127.0.0.1:{self.sentinel_port}/{self.SERVICE}"

    def start(self, timeout: float = 30.0) -> LocalSentinelPair:
        self.primary.start()
        self.replica.start()
        self.conf.write_text(
            f"port {self.sentinel_port}\nbind 127.0.0.1\n"
            f"sentinel monitor {self.SERVICE} 127.0.0.1 {self.primary.port} 1\n"
            f"sentinel down-after-milliseconds {self.SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {self.SERVICE} 5000\n"
        )
        self.sentinel = subprocess.Popen(
            [self.primary.binary, str(self.conf), "--sentinel", "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        LocalRedisCluster._wait(lambda: self.primary_port() == self.primary.port, timeout)
        LocalRedisCluster._wait(self._replica_linked, timeout)
        return self

    def _replica_linked(self) -> bool:
        with redis.Redis(port=self.replica.port, socket_timeout=5) as r:
            return bool(r.info("replication").get("master_link_status") == "up")

    def primary_port(self) -> int | None:
        """The port the Sentinel names as the primary now (None: it cannot say yet)."""
        try:
            with redis.Redis(port=self.sentinel_port, socket_timeout=2) as s:
                got: Any = s.execute_command("SENTINEL GET-MASTER-ADDR-BY-NAME", self.SERVICE)
        except redis.RedisError:
            return None
        return int(got[1]) if got else None

    def stop(self) -> None:
        if self.sentinel is not None and self.sentinel.poll() is None:
            self.sentinel.terminate()
            self.sentinel.wait(10)
        self.replica.stop()
        self.primary.stop()
