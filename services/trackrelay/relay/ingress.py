"""Shedding at our ingress: the relay's batches under the queue quota, the outbox under its own.

Orders are never shed: an order and its outbox rows are committed together
before anything here runs; only analytics events are sampled, folded, evicted
or dropped. The decisions are ``control.shedding``'s; this module applies them
with the quota's scripts (``trackrelay.queue.quota``) and the store's outbox queries,
and counts every event it sheds by where, policy and reason.
"""

from __future__ import annotations

import collections
import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace

from sqlalchemy.ext.asyncio import AsyncEngine

from trackrelay.config.live import ConfigMapLive
from trackrelay.config.settings import RelaySettings
from trackrelay.control.shedding import (
    Line,
    Shedding,
    admit_mode,
    aggregate_event,
    fold_lines,
    live_shedding,
    plan,
    pressure,
)
from trackrelay.control.shedding import choose as shedding_in_force
from trackrelay.events import Event, countable, rfc3339_ms, shard_of
from trackrelay.queue import streams
from trackrelay.queue.keys import SHEDDING_KEY
from trackrelay.queue.quota import FLUSH_MIN, QueueQuota
from trackrelay.queue.shedding import get_shedding
from trackrelay.relay import outbox
from trackrelay.relay.outbox import OutboxRow

log = logging.getLogger(__name__)

FOLD_MEMORY_SECONDS = 600.0
"""How long a fold is remembered if its rows are never deleted (a crash): well past a lease."""
FLUSH_CHUNK = 200
"""SKUs one flush script moves into the stream (fewer, down to ``FLUSH_MIN``, near the
quota: folds leave room for the smallest)."""
SAMPLE_CHUNK = 1000
"""Outbox rows one thinning transaction looks at."""


class Counts(collections.Counter[tuple[str, str, str]]):
    """Order lines shed, by (where, policy, reason): where is ``stream`` or ``outbox``.

    Lines, not events: an aggregate stands for many lines, and evicting one loses them all.
    """

    def as_dict(self) -> dict[str, int]:
        return {":".join(key): n for key, n in sorted(self.items())}


def choose(settings: RelaySettings, used_share: float, previous: Shedding) -> Shedding:
    return shedding_in_force(
        settings.shedding, settings.sample_p, used_share, previous, settings.thresholds()
    )


def _line(ev: Event) -> Line:
    return Line(ev.event_id, ev.sku, ev.qty, ev.weight, ev.lines)


@dataclass(slots=True)
class Outcome:
    """What became of one claimed batch."""

    queued: int = 0
    held: bool = False
    """Some rows stay in the outbox: the queue is at its quota."""


class StreamIngress:
    """Applies the shedding policy to the relay's claimed batches, within the queue quota."""

    def __init__(
        self,
        engine: AsyncEngine,
        quota: QueueQuota,
        settings: RelaySettings,
        counts: Counts,
        live: ConfigMapLive | None = None,
        *,
        flush_lag: int | None = None,
    ) -> None:
        """``flush_lag``: unread events in this shard below which closed windows are
        flushed (default ``aggregate_flush_lag``; a sharded queue gives each its share)."""
        self.engine = engine
        self.flush_lag = settings.aggregate_flush_lag if flush_lag is None else flush_lag
        self.configmap = live
        """The policy's source in a cluster (the operator's ConfigMap); None: Redis."""
        self.quota = quota
        self.settings = settings
        self.counts = counts
        self.shedding = Shedding()
        self.live: Shedding | None = None
        """The controller's decision (``SHEDDING_KEY``), which overrides our own when set."""
        self._bad_live: bytes | str | None = None
        self.used = 0
        self.sketching = False
        """The last fold put new SKUs into the window's sketch (exact counters were full)."""

    @property
    def share(self) -> float:
        return pressure(self.used, self.quota.quota)

    def decide(self) -> Shedding:
        own = choose(self.settings, self.share, self.shedding)
        self.shedding = self.live if self.live is not None else own
        return self.shedding

    async def refresh(self) -> None:
        self.used = await self.quota.used()
        if self.configmap is not None:
            self.live = self.configmap.shedding()
            self.decide()
            return
        raw = await get_shedding(self.quota.redis)
        try:
            self.live = None if raw is None else live_shedding(json.loads(raw))
        except ValueError as exc:
            if raw != self._bad_live:  # once per bad value, not every second
                log.warning("relay: ignoring %s: %s", SHEDDING_KEY, exc)
            self._bad_live, self.live = raw, None
        self.decide()

    async def relay(
        self, rows: Sequence[OutboxRow], token: str, deadline: float | None = None
    ) -> Outcome:
        """Queue, fold or shed one claimed batch. ``deadline``: when the claim may pass
        to another relay (Unix time); a fold that reaches Redis later is refused."""
        shedding = self.decide()
        out = Outcome()
        folds: dict[str, list[tuple[OutboxRow, Event]]] = collections.defaultdict(list)
        fresh: list[tuple[OutboxRow, Event | None]] = []
        for row in rows:
            ev = countable(row.payload)
            if row.fold_token is not None and ev is not None:
                folds[row.fold_token].append((row, ev))  # a fold that did not finish: redo it
            else:
                fresh.append((row, ev))
        lines = [_line(ev) for _, ev in fresh if ev is not None]
        decoded = [(row, ev) for row, ev in fresh if ev is not None]
        todo = plan(shedding, lines)
        send = [(row, row.payload, 1) for row, ev in fresh if ev is None]
        for i, weight in todo.send.items():
            row, ev = decoded[i]
            payload = row.payload if weight is None else replace(ev, weight=weight).to_json()
            send.append((row, payload, ev.lines))
        if todo.fold:
            marked = await outbox.mark_folded(
                self.engine, token, [decoded[i][0].id for i in todo.fold]
            )
            folds[token].extend(decoded[i] for i in todo.fold if decoded[i][0].id in marked)
        if todo.shed:
            gone = await outbox.delete_published(
                self.engine, token, [decoded[i][0].id for i in todo.shed]
            )
            self.counts["stream", shedding.policy.value, "sampled"] += gone
        for fold_token, members in folds.items():
            if not members:
                continue
            if not await self._fold(fold_token, members, token, shedding, deadline):
                out.held = True
        if send:
            queued, held = await self._admit(send, token, shedding)
            out.queued += queued
            out.held = out.held or held
        return out

    async def _fold(
        self,
        fold_token: str,
        members: list[tuple[OutboxRow, Event]],
        token: str,
        shedding: Shedding,
        deadline: float | None,
    ) -> bool:
        totals = fold_lines([_line(ev) for _, ev in members])
        code, self.used = await self.quota.fold(
            fold_token,
            totals,
            self.settings.aggregate_window,
            FOLD_MEMORY_SECONDS,
            deadline,
        )
        if code == 0:
            return False  # no room even for the counters: the rows wait in the outbox
        if code == 4:
            log.warning("relay: a fold came after this relay's lease; its rows are not ours")
            return True  # not held back: the rows belong to whichever relay holds them now
        ids = [row.id for row, _ in members]
        deleted = await outbox.delete_published(self.engine, token, ids)
        if deleted == len(ids):
            await self.quota.forget_fold(fold_token)
        if code in (1, 5):
            self.counts["stream", shedding.policy.value, "folded"] += sum(
                ev.lines for _, ev in members
            )
        if code == 5 and not self.sketching:
            log.warning(
                "relay: aggregation windows fill the queue quota; new SKUs go into a sketch"
                " of %d counters (their counts carry error bounds)",
                self.quota.sketch_counters,
            )
        self.sketching = code == 5
        return True

    async def _admit(
        self, send: list[tuple[OutboxRow, str, int]], token: str, shedding: Shedding
    ) -> tuple[int, bool]:
        mode = admit_mode(shedding.policy)
        admitted = await self.quota.admit([payload for _, payload, _ in send], mode)
        self.used = admitted.used
        done = [row.id for (row, _, _), s in zip(send, admitted.status, strict=True) if s != 0]
        await outbox.delete_published(self.engine, token, done)
        refused = sum(n for (_, _, n), s in zip(send, admitted.status, strict=True) if s < 0)
        if admitted.evicted:
            self.counts["stream", shedding.policy.value, "evicted"] += admitted.evicted
        if refused:
            self.counts["stream", shedding.policy.value, "refused"] += refused
        queued = sum(1 for s in admitted.status if s > 0)
        return queued, any(s == 0 for s in admitted.status)

    async def flush_due(self) -> int:
        """Move closed windows' aggregates into the stream while forwarders keep up.

        Only while fewer than ``aggregate_flush_lag`` events wait unread: until then
        aggregates stay in their compact form. No window, no further look.
        """
        windows = await self.quota.windows()
        if not windows:
            return 0
        room = self.flush_lag - await streams.unread(self.quota.redis, [self.quota.shard])
        moved = 0
        for key, start in windows:
            if room <= 0:
                break
            window = await self.quota.read_window(key, start, room)
            if not window.sealed:
                # Sealed first (an empty flush), so the sketch's floor is fixed before any
                # of the window's events is made, and no fold changes it after.
                code, _, self.used = await self.quota.flush(key, self.settings.aggregate_window, [])
                if code != 1:
                    return moved  # no room yet, or the window is still open
                window = await self.quota.read_window(key, start, room)
            stamp = rfc3339_ms(start)
            items = [
                (
                    sku,
                    raw,
                    aggregate_event(
                        sku,
                        start,
                        total,
                        count,
                        stamp,
                        window.errors.get(sku, 0.0),
                        window.floor if sku in window.errors else 0.0,
                    ).to_json(),
                )
                for sku, (raw, total, count) in list(window.skus.items())[:room]
            ]
            i, size = 0, FLUSH_CHUNK
            while True:
                code, n, self.used = await self.quota.flush(
                    key, self.settings.aggregate_window, items[i : i + size]
                )
                if code == 0 and size > FLUSH_MIN:
                    size = max(FLUSH_MIN, size // 2)  # near the quota: smaller flushes
                    continue
                moved += n
                room -= n
                if code in (0, 3):
                    return moved  # no room yet, or the window is still open
                i += size
                if i >= len(items):
                    break
        return moved


class ShardedIngress:
    """One ``StreamIngress`` per shard, each within its share of the quota: a batch is
    split by shard (``events.shard_of``), and every shard's part is admitted exactly
    against that shard's share by its own scripts. Routing by a hash of the order spreads
    the load evenly, so equal shares follow it; the sum is the quota."""

    def __init__(self, parts: Sequence[StreamIngress]) -> None:
        if not parts:
            raise ValueError("a sharded ingress needs at least one shard")
        self.parts = list(parts)

    @property
    def used(self) -> int:
        return sum(p.used for p in self.parts)

    @property
    def quota(self) -> int:
        return sum(p.quota.quota for p in self.parts)

    @property
    def fullest(self) -> StreamIngress:
        """The shard nearest its share: the policy it sheds by is the one reported."""
        return max(self.parts, key=lambda p: p.share)

    @property
    def shedding(self) -> Shedding:
        return self.fullest.shedding

    async def refresh(self) -> None:
        for part in self.parts:
            await part.refresh()

    async def relay(
        self, rows: Sequence[OutboxRow], token: str, deadline: float | None = None
    ) -> Outcome:
        if len(self.parts) == 1:
            return await self.parts[0].relay(rows, token, deadline)
        split: list[list[OutboxRow]] = [[] for _ in self.parts]
        for row in rows:
            split[shard_of(row.event_id, len(self.parts))].append(row)
        out = Outcome()
        for part, mine in zip(self.parts, split, strict=True):
            if mine:
                one = await part.relay(mine, token, deadline)
                out.queued += one.queued
                out.held = out.held or one.held
        return out

    async def flush_due(self) -> int:
        return sum([await part.flush_due() for part in self.parts])
