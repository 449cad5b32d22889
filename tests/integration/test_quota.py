"""The storage quota on a real Redis and real stores: shed analytics data, never orders.

A tiny queue quota and an analytics that reads slower than orders arrive (by
construction: it may read one entry for every two orders posted, however fast
this machine posts them): the queue's keys (counted exactly, every 20 ms) never
exceed the quota, XADD never meets Redis OOM, every order is accepted and reads
back, and every order line is accounted for: delivered (an aggregate counts the
lines it stands for), or counted as shed by policy and reason. With Redis down,
the outbox stays within its quota in rows on both stores.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import random
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from fastapi.testclient import TestClient

from tests.integration.conftest import wait_for
from tests.support.redis_cluster import LocalRedisCluster, SyncQueue, sync_client
from trackrelay.config.settings import OrderSettings
from trackrelay.local.embedded_redis import EmbeddedRedis
from trackrelay.local.runner import redis_maxmemory
from trackrelay.orders.app import create_app
from trackrelay.queue.keys import CONSUMER_GROUP, STREAM, first_shards
from trackrelay.queue.quota import PEL_COST, window_keys
from trackrelay.relay import outbox
from trackrelay.runtime.ports import free_port

QUOTA = 128 * 1024
ORDERS = 1200
SKUS = [f"sku-{n:02d}" for n in range(30)]


def queue_bytes(r: SyncQueue, shards: int = 1) -> int:
    """MEMORY USAGE of every key the quota covers, counted exactly (independent of the
    gauge), over every shard."""
    keys: list[str] = []
    for shard in first_shards(shards):
        windows: Any = r.zrange(shard.windows, 0, -1)
        keys += shard.quota_keys
        for w in windows:
            keys += window_keys(w.decode())
    return sum(int(r.memory_usage(k, samples=0) or 0) for k in keys)


class Peak(threading.Thread):
    """Samples ``measure`` every 20 ms in the background; keeps the largest value."""

    def __init__(self, measure: Callable[[], int]) -> None:
        super().__init__(daemon=True)
        self.measure = measure
        self.peak = 0
        self.samples = 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.peak = max(self.peak, self.measure())
            self.samples += 1
            time.sleep(0.02)

    def __enter__(self) -> Peak:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.join()


class SlowAnalytics(threading.Thread):
    """Reads the stream through the consumer group, as an analytics behind its
    forwarder would. Paced, it reads only the entries it was granted (``grant``),
    so it is slower than arrivals by construction, on any machine; unpaced, it
    reads as fast as it can."""

    READ = 20
    """Entries one read takes (so at most this many are pending at once)."""

    def __init__(self, url: str, paced: bool, shards: int = 1) -> None:
        """``shards``: it reads each in turn, ``READ / shards`` entries a read (as many
        pending at once in all as with one)."""
        super().__init__(daemon=True)
        self.redis = sync_client(url)
        self.streams = [shard.stream for shard in first_shards(shards)]
        self.read = max(1, self.READ // shards)
        self.paced = paced
        self.credit = 0.0
        self.lock = threading.Lock()
        self.events: dict[str, dict[str, Any]] = {}
        self.duplicates = 0
        self.done = threading.Event()
        for stream in self.streams:
            with contextlib.suppress(redis.ResponseError):  # the group is there already
                self.redis.xgroup_create(stream, CONSUMER_GROUP, id="0", mkstream=True)

    def grant(self, entries: float) -> None:
        """Let a paced analytics read ``entries`` more stream entries."""
        with self.lock:
            self.credit += entries

    def run(self) -> None:
        turn = 0
        while not self.done.is_set():
            stream = self.streams[turn % len(self.streams)]
            turn += 1
            count = self.read
            if self.paced:
                with self.lock:
                    count = min(self.read, int(self.credit))
                if count == 0:
                    time.sleep(0.005)
                    continue
            block = 50 if len(self.streams) == 1 else 5
            reply: Any = self.redis.xreadgroup(
                CONSUMER_GROUP, "test-analytics", {stream: ">"}, count=count, block=block
            )
            entries = reply[0][1] if reply else []
            if self.paced:
                with self.lock:
                    self.credit -= len(entries)
            for _, fields in entries:
                ev = json.loads(fields[b"e"])
                if ev["event_id"] in self.events:
                    self.duplicates += 1
                self.events[ev["event_id"]] = ev
            if entries:
                ids = [i for i, _ in entries]
                self.redis.xack(stream, CONSUMER_GROUP, *ids)
                self.redis.xdel(stream, *ids)

    def lines(self) -> int:
        return sum(int(ev.get("lines", 1)) for ev in self.events.values())

    def popularity(self) -> dict[str, float]:
        out: collections.Counter[str] = collections.Counter()
        for ev in self.events.values():
            out[ev["sku"]] += ev["qty"] * ev["weight"]
        return dict(out)

    def bounds(self, sku: str) -> tuple[float, float]:
        """The least and the most ``sku``'s true total can be, as the contract states:
        its count less its events' ``error``; its count plus the ``floor`` of every
        sketch window that did not list it."""
        count = low = 0.0
        floors: dict[str, float] = {}
        listed = 0.0
        for ev in self.events.values():
            if ev.get("floor"):
                floors[ev["order_id"]] = ev["floor"]
            if ev["sku"] == sku:
                count += ev["qty"] * ev["weight"]
                low += ev.get("error", 0.0)
                listed += ev.get("floor", 0.0)
        return count - low, count + sum(floors.values()) - listed

    def sketched(self) -> int:
        """Events that came from a sketch (with an error bound)."""
        return sum(1 for ev in self.events.values() if ev.get("error"))


def post_orders(
    client: TestClient, count: int, seed: int = 7, posted: Callable[[], None] = lambda: None
) -> tuple[list[str], dict[str, int]]:
    """``count`` two-line orders, every one accepted (``posted`` called after each);
    their ids and the true qty per SKU."""
    rng = random.Random(seed)
    truth: collections.Counter[str] = collections.Counter()
    ids = []
    for n in range(count):
        lines = [(rng.choice(SKUS), rng.randint(1, 3)) for _ in range(2)]
        items = [{"sku": sku, "qty": qty, "price": 100} for sku, qty in lines]
        r = client.post("/v1/orders", json={"customer_id": f"c{n}", "items": items})
        assert r.status_code == 201, r.text
        ids.append(r.json()["order_id"])
        posted()
        for sku, qty in lines:
            truth[sku] += qty
    return ids, dict(truth)


def shed_counts(client: TestClient) -> dict[tuple[str, str, str], float]:
    """``trackrelay_shed_lines_total`` from /metrics, by (where, policy, reason)."""
    out = {}
    pattern = r'trackrelay_shed_lines_total\{policy="(\w+)",reason="(\w+)",where="(\w+)"\} (\S+)'
    for policy, reason, where, value in re.findall(pattern, client.get("/metrics").text):
        out[where, policy, reason] = float(value)
    return out


def lost(counts: dict[tuple[str, str, str], float]) -> int:
    """Lines shed for good (folded ones are delivered inside aggregates)."""
    return int(sum(n for (_, _, reason), n in counts.items() if reason != "folded"))


def wait_accounted(client: TestClient, analytics: SlowAnalytics, lines: int) -> None:
    """Wait until every one of ``lines`` order lines is delivered or counted as shed."""
    wait_for(
        lambda: analytics.lines() + lost(shed_counts(client)) == lines,
        10,
        "every line delivered or counted as shed",
        lambda: f"delivered {analytics.lines()}, shed {shed_counts(client)}",
    )


def wait_drained(client: TestClient, admin: SyncQueue, shards: int = 1) -> None:
    """Wait until the outbox, every shard's stream and aggregation window are empty."""
    every = first_shards(shards)

    def left() -> tuple[int, int]:
        return (
            sum(int(admin.xlen(s.stream)) for s in every),
            sum(int(admin.zcard(s.windows)) for s in every),
        )

    wait_for(
        lambda: outbox_rows(client) == 0 and left() == (0, 0),
        60,
        "outbox, stream and aggregation windows drained",
        lambda: (
            f"outbox {outbox_rows(client)}, stream and windows {left()}, "
            f"queue {queue_bytes(admin, shards)} of {QUOTA}"
        ),
    )


def outbox_rows(client: TestClient) -> int:
    engine = client.app.state.engine  # type: ignore[attr-defined]
    return int(client.portal.call(outbox.count_outbox, engine))  # type: ignore[union-attr]


def read_back(client: TestClient, ids: list[str]) -> None:
    for order_id in ids:
        assert client.get(f"/v1/orders/{order_id}").status_code == 200


@pytest.fixture
def quota_redis(tmp_path: Path) -> Iterator[EmbeddedRedis]:
    """The Redis trackrelay ships: noeviction, maxmemory above the quota."""
    with EmbeddedRedis(tmp_path / "redis", maxmemory=redis_maxmemory(QUOTA)) as server:
        yield server


@pytest.fixture
def quota_queue(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """The Redis trackrelay ships (``standalone``), or a Redis Cluster of three primaries
    (``cluster``): noeviction, maxmemory above the quota on every node."""
    server: Any
    if request.param == "cluster":  # a node may hold every shard of a four-shard queue
        server = LocalRedisCluster(tmp_path / "cluster", maxmemory=redis_maxmemory(4 * QUOTA))
    else:
        server = EmbeddedRedis(tmp_path / "redis", maxmemory=redis_maxmemory(QUOTA))
    with server:
        yield server


@pytest.mark.parametrize(
    ("policy", "quota_queue", "shards"),
    [
        *((policy, "standalone", 1) for policy in ("auto", "none", "sample", "aggregate")),
        *((policy, "standalone", 1) for policy in ("evict", "drop_new")),
        # every script the quota runs, on a Redis Cluster: admit, evict, fold and flush
        *((policy, "cluster", 1) for policy in ("none", "aggregate", "evict")),
        # four shards over three primaries: the quota is the sum of their shares
        *((policy, "cluster", 4) for policy in ("none", "aggregate", "evict")),
    ],
    indirect=["quota_queue"],
)
def test_the_queue_stays_under_a_tiny_quota_and_every_line_is_accounted_for(
    policy: str, quota_queue: EmbeddedRedis | LocalRedisCluster, shards: int, tmp_path: Path
) -> None:
    quota = QUOTA * shards  # each shard's share as tiny as the one stream's quota
    orders = ORDERS * (2 if shards > 1 else 1)  # as much pressing on each share
    settings = OrderSettings(
        data_dir=tmp_path,
        queue_shards=shards,
        queue_quota=quota,
        shedding=policy,
        aggregate_window=0.5,
        relay_batch_size=100,
        queue_read_ahead=SlowAnalytics.READ,
        outbox_quota=100_000,  # the queue's bound is under test (none: rows wait there)
    )
    admin = sync_client(quota_queue.url)
    analytics = SlowAnalytics(quota_queue.url, paced=True, shards=shards)
    with (
        TestClient(create_app(settings, redis_url=quota_queue.url)) as client,
        Peak(lambda: queue_bytes(admin, shards)) as memory,
    ):
        analytics.start()
        # analytics reads one entry for every two orders (four lines) posted
        ids, truth = post_orders(client, orders, posted=lambda: analytics.grant(0.5))
        if policy == "auto":
            # The automatic mode starts aggregating at 40 % of the quota as admission
            # counts it (memory plus the room kept for pending entries): it must get
            # there. The relay may still be behind the posting: wait, analytics paced.
            wait_for(
                lambda: bool({key[1] for key in shed_counts(client)} - {"none"}),
                30,
                "the automatic mode shedding under the load",
                lambda: f"peak {memory.peak} of {quota}, shed {shed_counts(client)}",
            )
        elif policy not in ("sample", "aggregate"):  # those two thin the load itself
            wait_for(
                lambda: memory.peak > 0.5 * quota,
                30,
                "the load pressing on the quota",
                lambda: f"peak {memory.peak} of {quota}, outbox {outbox_rows(client)}",
            )
        analytics.paced = False  # analytics recovers: everything still queued drains
        wait_drained(client, admin, shards)
        read_back(client, ids)
        lines = 2 * orders
        wait_accounted(client, analytics, lines)
        counts = shed_counts(client)
        errors = re.findall(
            r'trackrelay_relay_errors_total\{component="redis"\} (\S+)', client.get("/metrics").text
        )
    analytics.done.set()
    analytics.join()
    assert memory.peak <= quota, f"queue used {memory.peak} bytes of a {quota}-byte quota"
    assert not errors or float(errors[0]) == 0, "a write met Redis OOM (or Redis failed)"
    assert analytics.duplicates == 0
    delivered = analytics.popularity()
    if policy in ("none", "aggregate"):
        assert lost(counts) == 0
        assert sum(delivered.values()) == pytest.approx(sum(truth.values()), rel=1e-9)
        # Exact per SKU, unless a window's exact counters did not fit and its sketch
        # took the SKU: then the truth lies within the bounds the counts state.
        for sku, qty in truth.items():
            low, high = analytics.bounds(sku)
            assert low - 1e-6 <= qty <= high + 1e-6, (sku, low, high, qty)
        if not analytics.sketched():
            assert delivered == pytest.approx(truth, rel=1e-9)
    if policy == "none":
        assert len(analytics.events) == lines
    if policy == "aggregate":
        assert counts["stream", "aggregate", "folded"] == lines
        # Every event is an aggregate, at most one per SKU and window (its id is made
        # of both, and a second one would count as a duplicate): how many windows the
        # load spans depends on this machine's speed, this shape does not.
        events = list(analytics.events.values())
        assert all(ev["order_id"].startswith("agg:") for ev in events)
        assert all(ev["event_id"] == f"{ev['order_id']}:{ev['sku']}" for ev in events)
        per_window = collections.Counter(ev["order_id"] for ev in events)
        assert max(per_window.values()) <= len(SKUS)
    if policy == "sample":
        assert counts["stream", "sample", "sampled"] > lines / 2
        assert {ev["weight"] for ev in analytics.events.values()} == {1 / 0.1}
    if policy == "evict":
        assert counts["stream", "evict", "evicted"] > 0
    if policy == "drop_new":
        assert counts["stream", "drop_new", "refused"] > 0
    if policy == "auto":
        levels = {key[1] for key in counts}
        assert levels - {"none"}, f"the automatic mode never shed: {counts}"


def test_the_outbox_stays_within_its_quota_while_redis_is_down(
    database_url: str, tmp_path: Path
) -> None:
    """Redis down for the whole load: orders are all accepted, the outbox never holds
    more rows than its quota, and once Redis is back every line is delivered or counted."""
    quota = 300
    port = free_port()
    settings = OrderSettings(
        database_url=database_url,
        data_dir=tmp_path,
        outbox_quota=quota,
        outbox_check_interval=0.1,
        relay_backoff_max=0.5,
    )
    server: EmbeddedRedis | None = None
    with TestClient(create_app(settings, redis_url=f"redis://127.0.0.1:{port}/0")) as client:
        guard = client.app.state.relay.guard  # type: ignore[attr-defined]
        posted = 0

        def keep_within_forecast() -> None:
            # The guard is a periodic check that leaves room for twice the last
            # interval's arrivals: its promise holds for a load that does not outrun
            # it. So after every 10 orders (20 lines, under a tenth of the quota) one
            # whole check must pass, however slow this machine is.
            nonlocal posted
            posted += 1
            if posted % 10 == 0:
                seen = guard.checks
                wait_for(lambda: guard.checks >= seen + 2, 10, "an outbox check")

        with Peak(lambda: outbox_rows(client)) as rows:
            ids, truth = post_orders(client, 600, posted=keep_within_forecast)
            time.sleep(0.5)
        read_back(client, ids)
        assert rows.peak <= quota, f"the outbox held {rows.peak} rows, quota {quota}"
        # 1,200 lines against a 300-row quota press on it whatever this machine's
        # speed: the guard must have shed (and only in the outbox: Redis is down)
        counts = shed_counts(client)
        assert {key[0] for key in counts} == {"outbox"}
        assert sum(counts.values()) > 0, "the outbox guard never shed"
        server = EmbeddedRedis(tmp_path / "redis", port=port).start()  # Redis is back
        analytics = SlowAnalytics(server.url, paced=False)
        analytics.start()
        wait_for(lambda: outbox_rows(client) == 0, 30, "the outbox drained")
        wait_accounted(client, analytics, 1200)
        analytics.done.set()
        analytics.join()
    server.stop()
    assert analytics.duplicates == 0
    assert set(analytics.popularity()) <= set(truth)


async def test_a_retried_fold_counts_once_and_a_flush_moves_each_sku_once(
    redis_server: EmbeddedRedis,
) -> None:
    """The crash cases of aggregation, driven directly: a fold retried under the same
    token (its rows were not deleted before a crash) and a flush retried, or run by two
    relays at once, never count a line twice; a window being flushed takes no new folds."""
    from redis.asyncio import Redis

    from trackrelay.events import Event
    from trackrelay.queue.quota import QueueQuota

    r = Redis.from_url(redis_server.url)
    quota = QueueQuota(r, 10 * 2**20)
    totals = {"a": (3.0, 2), "b": (2.5, 1)}
    assert (await quota.fold("batch-1", totals, 0.05, 60))[0] == 1
    assert (await quota.fold("batch-1", totals, 0.05, 60))[0] == 2  # already folded
    [(key, start)] = await quota.windows()
    window = await quota.read_window(key, start, 100)
    assert {sku: v[1:] for sku, v in window.skus.items()} == {"a": (3.0, 2), "b": (2.5, 1)}
    await asyncio.sleep(0.06)  # the window has closed
    items = [
        (sku, raw, Event(f"agg:{start}:{sku}", "agg", sku, 1, total, "t", n).to_json())
        for sku, (raw, total, n) in window.skus.items()
    ]
    code, moved, _ = await quota.flush(key, 0.05, items[:1])
    assert (code, moved) == (1, 1)
    # A fold now opens a new window: the sealed one takes no more lines for "a".
    assert (await quota.fold("batch-2", {"a": (1.0, 1)}, 0.05, 60))[0] == 1
    assert len(await quota.windows()) == 2
    code, moved, _ = await quota.flush(key, 0.05, items)  # a retry of the whole window
    assert (code, moved) == (1, 1)  # only "b" was left to move
    assert await r.xlen(STREAM) == 2
    assert [k for k, _ in await quota.windows()] != [key]  # the flushed window is gone
    assert (await quota.flush(key, 0.05, items))[0] == 2
    await r.aclose()


async def test_outbox_aggregates_of_two_pressure_episodes_never_share_an_id(
    database_url: str,
) -> None:
    """The outbox drains between two folds: a store whose row ids start again once the
    table is empty (SQLite's INTEGER PRIMARY KEY without AUTOINCREMENT) must not name
    the second fold's aggregates as the first's, or analytics drops them as duplicates."""
    from sqlalchemy import delete, insert, select

    from trackrelay.config.settings import resolve_database_url
    from trackrelay.db.engine import make_engine
    from trackrelay.db.schema import outbox as table
    from trackrelay.db.startup import migrate_store
    from trackrelay.events import Event

    url = resolve_database_url(database_url, Path("."))
    await migrate_store(url)
    engine = make_engine(url)
    ids: list[set[str]] = []
    try:
        for episode in range(2):
            rows = [
                {
                    "event_id": f"e{episode}-{i}",
                    "payload": Event(
                        f"e{episode}-{i}", f"o{episode}-{i}", f"sku-{i % 3}", 1, 1.0,
                        "2026-01-01T00:00:00.000Z",
                    ).to_json(),
                    "created_at": time.time(),
                }
                for i in range(30)
            ]  # fmt: skip
            async with engine.begin() as conn:
                await conn.execute(insert(table), rows)
            folded, written, lines = await outbox.fold_outbox(engine, 100, time.time())
            assert (folded, written, lines) == (30, 3, 30)
            async with engine.begin() as conn:
                ids.append(set((await conn.execute(select(table.c.event_id))).scalars()))
                await conn.execute(delete(table))  # relayed: the outbox is empty again
    finally:
        await engine.dispose()
    assert len(ids[0]) == len(ids[1]) == 3
    assert not ids[0] & ids[1], ids


class StalledFold:
    """A queue quota whose first ``fold`` stops before it reaches Redis until released:
    the relay process stalled (SIGSTOP) between marking its rows and folding them."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    async def fold(self, *args: Any, **kwargs: Any) -> tuple[int, int]:
        self.entered.set()
        await self.release.wait()
        result: tuple[int, int] = await self.inner.fold(*args, **kwargs)
        return result


async def test_a_relay_stalled_past_its_lease_mid_fold_cannot_count_the_rows_again(
    database_url: str, redis_server: EmbeddedRedis
) -> None:
    """Relay A marks its rows for a fold and stalls before the fold reaches Redis; its
    lease ends; relay B takes the rows over, folds them (under A's token, as a retry),
    deletes them and forgets the token. A resumes: its fold must be refused, so the
    per-SKU totals in the window equal the database's."""
    from redis.asyncio import Redis
    from sqlalchemy import insert

    from trackrelay.config.settings import RelaySettings, resolve_database_url
    from trackrelay.control.lease import grant
    from trackrelay.db.engine import make_engine
    from trackrelay.db.schema import outbox as table
    from trackrelay.db.startup import migrate_store
    from trackrelay.events import Event
    from trackrelay.queue.quota import QueueQuota
    from trackrelay.relay.ingress import Counts, StreamIngress

    url = resolve_database_url(database_url, Path("."))
    await migrate_store(url)
    engine = make_engine(url)
    r = Redis.from_url(redis_server.url)
    settings = RelaySettings(shedding="aggregate", queue_quota=10 * 2**20)
    truth: collections.Counter[str] = collections.Counter()
    rows = []
    for i in range(30):
        sku = f"sku-{i % 4}"
        truth[sku] += 1 + i % 3
        ev = Event(f"e-{i}", f"o-{i}", sku, 1 + i % 3, 1.0, "2026-01-01T00:00:00.000Z")
        rows.append({"event_id": ev.event_id, "payload": ev.to_json(), "created_at": time.time()})
    try:
        async with engine.begin() as conn:
            await conn.execute(insert(table), rows)
        quota = QueueQuota(r, 10 * 2**20)
        stalled = StalledFold(quota)
        a = StreamIngress(engine, stalled, settings, Counts())  # type: ignore[arg-type]
        lease_a = grant("relay-a", time.time(), 1.5)
        claimed = await outbox.claim_outbox(engine, lease_a, 100, time.time())
        assert len(claimed) == 30
        task = asyncio.create_task(a.relay(claimed, lease_a.token, lease_a.expires_at - 1.0))
        await asyncio.wait_for(stalled.entered.wait(), 10)
        await asyncio.sleep(max(0.0, lease_a.expires_at - time.time()) + 0.1)
        b = StreamIngress(engine, quota, settings, Counts())
        lease_b = grant("relay-b", time.time(), 30)
        taken = await outbox.claim_outbox(engine, lease_b, 100, time.time())
        assert len(taken) == 30 and {row.fold_token for row in taken} == {lease_a.token}
        await b.relay(taken, lease_b.token, lease_b.expires_at - 1.0)
        assert await outbox.count_outbox(engine) == 0  # folded by B, rows deleted
        stalled.release.set()  # A resumes
        await asyncio.wait_for(task, 10)
        counted: collections.Counter[str] = collections.Counter()
        for key, start in await quota.windows():
            window = await quota.read_window(key, start, 1000)
            for sku, (_, total, _) in window.skus.items():
                counted[sku] += int(total)
        assert counted == truth
    finally:
        await r.aclose()
        await engine.dispose()


def unique_orders(client: TestClient, count: int, lines: int = 40) -> int:
    """``count`` orders of ``lines`` SKUs never seen before, 105 characters each (the shape
    that filled the quota with aggregation windows no flush could move); lines posted."""
    for n in range(count):
        items = [
            {"sku": f"{n:06d}-{i:03d}-" + "x" * 94, "qty": 1, "price": 100} for i in range(lines)
        ]
        r = client.post("/v1/orders", json={"customer_id": f"c{n}", "items": items})
        assert r.status_code == 201, r.text
    return count * lines


def test_a_flood_of_unique_skus_cannot_wedge_the_queue(
    quota_redis: EmbeddedRedis, tmp_path: Path
) -> None:
    """Policy aggregate, analytics reading nothing, orders of 40 never-repeated long SKUs
    until the windows fill the quota; then analytics reads again. Folds leave room for
    the flushes that drain the windows, so everything drains and every line is delivered
    or counted as shed, with the queue within its quota throughout."""
    settings = OrderSettings(
        data_dir=tmp_path,
        queue_quota=QUOTA,
        shedding="aggregate",
        aggregate_window=0.2,
        relay_batch_size=100,
        queue_read_ahead=SlowAnalytics.READ,
        outbox_quota=100_000,  # the queue's bound is under test, not the outbox's
    )
    admin = redis.Redis.from_url(quota_redis.url)
    analytics = SlowAnalytics(quota_redis.url, paced=True)  # granted nothing: reads nothing
    with (
        TestClient(create_app(settings, redis_url=quota_redis.url)) as client,
        Peak(lambda: queue_bytes(admin)) as memory,
    ):
        analytics.start()
        lines = unique_orders(client, 60)  # 2,400 SKUs: exact counters hold about 400

        def folded() -> float:
            return shed_counts(client).get(("stream", "aggregate", "folded"), 0)

        relay = client.app.state.relay  # type: ignore[attr-defined]

        def pressed() -> bool:
            """Every line folded, or the quota holding the rest back in the outbox: on a
            slow machine the windows close sooner, and their flushed aggregates (one per
            unique SKU) can fill the queue before every line is folded."""
            return folded() == lines or (relay.full and outbox_rows(client) > 0)

        wait_for(
            pressed,
            60,
            "every line folded, or the queue full, while analytics reads nothing",
            lambda: f"folded {folded()}, outbox {outbox_rows(client)}, queue {memory.peak}",
        )
        analytics.paced = False  # analytics reads again: nothing may stay wedged
        wait_drained(client, admin)
        wait_accounted(client, analytics, lines)
        counts = shed_counts(client)
    analytics.done.set()
    analytics.join()
    assert memory.peak <= QUOTA, f"queue used {memory.peak} bytes of a {QUOTA}-byte quota"
    assert analytics.duplicates == 0
    # Past what exact counters could hold, new SKUs went into the bounded sketch: every
    # count analytics got brackets the truth (1 per SKU) within its error bound; the
    # aggregates stand for every line folded, and with the lines that went as events
    # (those the quota held in the outbox until the queue had room) for every line.
    delivered = analytics.popularity()
    assert analytics.sketched() > 0, "the sketch was never used"
    for sku in [f"{n:06d}-{i:03d}-" + "x" * 94 for n in range(60) for i in range(40)]:
        low, high = analytics.bounds(sku)
        assert low - 1e-6 <= 1 <= high + 1e-6, (sku, low, high)
    aggregated = sum(
        ev["qty"] * ev["weight"]
        for ev in analytics.events.values()
        if str(ev["order_id"]).startswith("agg:")
    )
    assert aggregated == pytest.approx(counts[("stream", "aggregate", "folded")])
    assert sum(delivered.values()) == pytest.approx(lines - lost(counts))


async def test_a_window_past_its_exact_counters_keeps_every_count_within_its_bound(
    redis_server: EmbeddedRedis,
) -> None:
    """Zipf-distributed SKUs folded into one window under a quota that holds only part of
    them exactly: the rest go into the window's sketch. Sealed, the window lists each SKU
    with a total whose error bound brackets the truth; a SKU it does not list had at most
    its floor; the heaviest SKUs are listed; totals and lines are exact."""
    from redis.asyncio import Redis

    from trackrelay.queue.quota import QueueQuota

    r = Redis.from_url(redis_server.url)
    quota = QueueQuota(r, 96 * 1024)
    rng = random.Random(5)
    weights = [1 / k**1.1 for k in range(1, 5001)]
    truth: dict[str, float] = collections.defaultdict(float)
    codes = collections.Counter[int]()
    for batch in range(120):
        totals: dict[str, tuple[float, int]] = {}
        for k in rng.choices(range(5000), weights, k=100):
            sku = f"sku-{k:05d}-" + "y" * 40
            total, lines = totals.get(sku, (0.0, 0))
            totals[sku] = (total + 1.0, lines + 1)
        code, _ = await quota.fold(f"t{batch}", totals, 0.01, 60)
        codes[code] += 1
        if code in (1, 5):
            for sku, (total, _) in totals.items():
                truth[sku] += total
    assert codes[5] > 0, codes  # the exact counters filled up; the sketch took over
    assert codes[0] == 0, codes  # and no fold was refused
    [(key, start)] = await quota.windows()
    await asyncio.sleep(0.02)
    assert (await quota.flush(key, 0.01, []))[0] == 1  # sealed
    window = await quota.read_window(key, start, 100_000)
    assert window.sealed and window.floor > 0
    listed = {sku: total for sku, (_, total, _) in window.skus.items()}
    for sku, qty in truth.items():
        if sku in listed:
            error = window.errors.get(sku, 0.0)
            assert listed[sku] - error - 1e-9 <= qty <= listed[sku] + 1e-9, (sku, qty)
        else:
            assert qty <= window.floor + 1e-9, (sku, qty, window.floor)
    heaviest = sorted(truth, key=truth.__getitem__, reverse=True)[:20]
    assert all(sku in listed for sku in heaviest)
    assert sum(listed.values()) == pytest.approx(sum(truth.values()))
    assert sum(lines for _, _, lines in window.skus.values()) == sum(truth.values())
    await r.aclose()


@pytest.mark.parametrize(("consumers", "each"), [(1, 20), (4, 5), (10, 2), (20, 1)])
@pytest.mark.parametrize("ms_apart", [0, 1, 7, 70_000])
def test_the_room_kept_for_each_pending_entry_covers_what_redis_counts(
    consumers: int, each: int, ms_apart: int, quota_redis: EmbeddedRedis
) -> None:
    """Admission keeps PEL_COST bytes for each entry forwarders will read next. Reading
    entries adds nodes to the group's and each consumer's radix trees, and how many
    depends on how their ids share prefixes: every shape here must cost no more."""
    r = redis.Redis.from_url(quota_redis.url)
    r.xgroup_create(STREAM, CONSUMER_GROUP, id="0", mkstream=True)
    start = 1_796_231_662_704
    for i in range(400):  # three entries per millisecond, the milliseconds ms_apart apart
        r.xadd(STREAM, {"e": "x" * 200}, id=f"{start + (i // 3) * ms_apart}-{i}")
    for c in range(consumers):  # a forwarder's consumer exists before it reads
        r.xgroup_createconsumer(STREAM, CONSUMER_GROUP, f"c{c}")
    costs = []
    for _ in range(8):
        before = int(r.memory_usage(STREAM, samples=0) or 0)
        read: list[Any] = []
        for c in range(consumers):
            reply: Any = r.xreadgroup(CONSUMER_GROUP, f"c{c}", {STREAM: ">"}, count=each)
            read += [entry_id for entry_id, _ in reply[0][1]]
        costs.append((int(r.memory_usage(STREAM, samples=0) or 0) - before) / len(read))
        r.xack(STREAM, CONSUMER_GROUP, *read)
        r.xdel(STREAM, *read)
    assert len(costs) == 8 and min(costs) > 0
    assert max(costs) <= PEL_COST, f"{max(costs):.0f} bytes a pending entry, {PEL_COST} kept"


async def test_a_relay_that_listed_the_windows_before_another_opened_one_counts_it(
    redis_server: EmbeddedRedis,
) -> None:
    """Each script is given every key it touches, the windows' too, as its relay last listed
    them; a window another relay opened since is refused before anything is written, listed
    again and counted: the two relays' gauges agree."""
    from redis.asyncio import Redis

    from trackrelay.queue.quota import QueueQuota

    r = Redis.from_url(redis_server.url)
    one, other = QueueQuota(r, 10 * 2**20), QueueQuota(r, 10 * 2**20)
    before = await other.used(fresh=True)
    assert await other.windows() == []
    totals = {f"sku-{n}": (1.0, 1) for n in range(300)}
    assert (await one.fold("batch-1", totals, 60, 60))[0] == 1
    [(window, _)] = await one.windows()
    held = sum([int(await r.memory_usage(k, samples=0) or 0) for k in window_keys(window)])
    assert held > 300 * 6
    after = await other.used(fresh=True)
    assert len(other._listed) == 1  # listed again on the way
    assert abs(after - await one.used(fresh=True)) <= 64  # the gauge's own hash grows
    assert after - before >= held  # the window counted (and the fold's token)
    await r.aclose()
