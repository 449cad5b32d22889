"""Live configuration the controller writes and forwarders and relays follow.

Two sources, one meaning: in local mode the budget and shedding policy are
Redis keys (``BUDGET_KEY``, ``SHEDDING_KEY``), read where they are used; in a
cluster the operator writes them to a ConfigMap, which ``ConfigMapLive``
watches through the API. A value that does not parse is ignored with one
warning and the last good one stays (fail static).
"""

from __future__ import annotations

import json
import logging

from trackrelay.config.configmap import BUDGET, SHEDDING, ConfigMapWatch
from trackrelay.control.shedding import Shedding, live_shedding

log = logging.getLogger(__name__)


class ConfigMapLive:
    def __init__(self, ref: str, watch: ConfigMapWatch | None = None) -> None:
        self.watch = watch or ConfigMapWatch(ref)
        self._budget: float | None = None
        self._shedding: Shedding | None = None
        self._bad: set[str] = set()

    def start(self) -> ConfigMapLive:
        self.watch.start()
        return self

    def _warn(self, key: str, raw: str, why: str) -> None:
        if f"{key}={raw}" not in self._bad:  # once per bad value
            self._bad.add(f"{key}={raw}")
            log.warning("live ConfigMap: ignoring %s=%r: %s", key, raw, why)

    def budget(self) -> float | None:
        """The budget in events/s; None when the ConfigMap sets none (no limit)."""
        data = self.watch.data
        if data is None:
            return self._budget
        raw = data.get(BUDGET, "").strip()
        if not raw:
            self._budget = None
            return None
        try:
            value = float(raw)
            if not value > 0 or value == float("inf"):
                raise ValueError("must be a finite number > 0")
        except ValueError as exc:
            self._warn(BUDGET, raw, str(exc))
            return self._budget
        self._budget = value
        return value

    def shedding(self) -> Shedding | None:
        """The decided shedding policy; None when the ConfigMap has none."""
        data = self.watch.data
        if data is None or not data.get(SHEDDING):
            return self._shedding
        raw = data[SHEDDING]
        try:
            self._shedding = live_shedding(json.loads(raw))
        except ValueError as exc:
            self._warn(SHEDDING, raw, str(exc))
        return self._shedding
