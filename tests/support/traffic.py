"""Track requests posted straight to the simulator from threads, to give its metrics data."""

from __future__ import annotations

import itertools
import json
import threading
import urllib.error
import urllib.request


class Traffic:
    """Threads posting track requests to the simulator until stopped (any answer will do)."""

    def __init__(self, url: str, threads: int = 4, events: int = 5) -> None:
        self.url = url
        self.events = events
        self.stop = threading.Event()
        self.ids = itertools.count()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]

    def _run(self) -> None:
        while not self.stop.is_set():
            batch = [
                {
                    "event_id": f"t{n}:0",
                    "order_id": f"t{n}",
                    "sku": "s",
                    "qty": 1,
                    "occurred_at": "2026-01-01T00:00:00.000Z",
                }
                for n in (next(self.ids) for _ in range(self.events))
            ]
            req = urllib.request.Request(
                f"{self.url}/v1/track",
                data=json.dumps({"events": batch}).encode(),
                headers={"content-type": "application/json"},
            )
            try:
                with urllib.request.urlopen(req, timeout=30):
                    pass
            except (urllib.error.URLError, OSError):
                self.stop.wait(0.05)  # a 429 or 503 raises HTTPError: keep going

    def __enter__(self) -> Traffic:
        for t in self.threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(35)
