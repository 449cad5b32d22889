"""A retry allowance: retries stay a bounded fraction of first attempts (pure).

A failing analytics must never get a retry storm, however many batches a
forwarder holds (Finagle's and gRPC's retry allowances work the same way).
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True, slots=True)
class RetryAllowance:
    """Retries at most ``ratio`` of first attempts (plus a small reserve), as tokens.

    Each first attempt deposits ``ratio`` tokens (up to ``cap``); each retry needs
    one. So a failing analytics sees at most ``1 + ratio`` times the offered load.
    """

    ratio: float = 0.1
    cap: float = 10.0
    tokens: float = 10.0

    def first_attempt(self) -> RetryAllowance:
        return replace(self, tokens=min(self.cap, self.tokens + self.ratio))

    def try_retry(self) -> tuple[bool, RetryAllowance]:
        if self.tokens < 1.0:
            return False, self
        return True, replace(self, tokens=self.tokens - 1.0)
