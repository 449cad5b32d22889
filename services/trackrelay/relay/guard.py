"""The outbox guard: keeps the outbox within its quota in rows, so the order database is
never the overflow when the queue is full.
"""

from __future__ import annotations

import logging
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from trackrelay.config.settings import RelaySettings
from trackrelay.control.shedding import (
    Policy,
    Shedding,
    Thresholds,
    outbox_excess,
    pressure,
)
from trackrelay.relay import outbox
from trackrelay.relay.ingress import SAMPLE_CHUNK, Counts, choose

log = logging.getLogger(__name__)


class OutboxGuard:
    """Keeps the outbox within its quota in rows, whatever Redis is doing.

    Run by the relay on its own interval (it needs only the database). The
    policy acts once pressure reaches the first level (``shed_sample_at``):
    sample thins rows no relay holds, aggregate folds them into one row per SKU,
    and past ``evict_at`` of the quota the oldest rows go (the newest for
    ``drop_new``), so the order database is never the overflow.
    """

    def __init__(self, engine: AsyncEngine, settings: RelaySettings, counts: Counts) -> None:
        if settings.outbox_quota is None:
            raise ValueError("the outbox guard needs an outbox quota")
        self.engine = engine
        self.settings = settings
        self.quota = settings.outbox_quota
        self.counts = counts
        self.shedding = Shedding()
        self.rows = 0
        self.checks = 0
        """Checks completed: each brings the outbox within its quota, with room for the
        next interval's arrivals if they are no more than twice the last one's."""
        self._thinned: tuple[int, float] = (0, 1.0)
        """Rows up to this id were thinned at this keep probability."""

    @property
    def thresholds(self) -> Thresholds:
        return self.settings.thresholds()

    async def check(self, now: float) -> Shedding:
        try:
            return await self._check(now)
        finally:
            self.checks += 1

    async def _check(self, now: float) -> Shedding:
        rows = await outbox.count_outbox(self.engine)
        arriving = max(0, rows - self.rows)  # at least what came in since the last check
        self.rows = rows
        share = pressure(self.rows, self.quota)
        self.shedding = choose(self.settings, share, self.shedding)
        policy = self.shedding.policy
        if share < self.thresholds.sample_at:
            self._thinned = (0, 1.0)
            return self.shedding
        excess = outbox_excess(self.rows, self.quota, self.thresholds, arriving)
        if excess:
            newest = policy is Policy.DROP_NEW
            gone, lines = await outbox.remove_outbox(self.engine, excess, newest=newest, now=now)
            self.counts["outbox", policy.value, "refused" if newest else "evicted"] += lines
            self.rows -= gone
        elif policy is Policy.SAMPLE:
            await self._thin(now)
        elif policy is Policy.AGGREGATE:
            folded, written, lines = await outbox.fold_outbox(self.engine, 10 * SAMPLE_CHUNK, now)
            self.counts["outbox", policy.value, "folded"] += lines
            self.rows -= folded - written
        return self.shedding

    async def _thin(self, now: float) -> None:
        p = self.shedding.p
        after, done_p = self._thinned
        if p < done_p:
            after = 0  # a lower p: every row is judged again (kept rows stay consistent)
        for _ in range(10):
            last, shed = await outbox.sample_outbox(self.engine, p, after, SAMPLE_CHUNK, now)
            self.counts["outbox", Policy.SAMPLE.value, "sampled"] += shed
            self.rows -= shed
            if last == after:
                break
            after = last
        self._thinned = (after, p)

    def view(self) -> dict[str, Any]:
        return {
            "outbox_rows": self.rows,
            "outbox_quota": self.quota,
            "outbox_policy": self.shedding.policy.value,
            "outbox_p": self.shedding.p,
        }
