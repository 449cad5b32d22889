"""How a forwarder reads analytics' answer to a push (the push contract in DESIGN.md).

2xx: accepted. 429/503: overloaded, back off (honour Retry-After). 400: the
batch holds bad events, split it. Anything else, timeouts and resets: failed,
retry. Pure: the HTTP adapter hands in the status and the header text.
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class Outcome(StrEnum):
    ACCEPTED = "accepted"
    OVERLOADED = "overloaded"
    REJECTED = "rejected"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class PushResult:
    outcome: Outcome
    retry_after: float | None = None
    detail: str = ""


def classify(
    status: int, retry_after: str | None = None, now: datetime | None = None
) -> PushResult:
    if 200 <= status < 300:
        return PushResult(Outcome.ACCEPTED)
    if status in (429, 503):
        return PushResult(Outcome.OVERLOADED, parse_retry_after(retry_after, now), f"HTTP {status}")
    if status == 400:
        return PushResult(Outcome.REJECTED, detail="HTTP 400")
    return PushResult(Outcome.FAILED, detail=f"HTTP {status}")


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from Retry-After (delta-seconds or HTTP date); None if absent or bad."""
    if value is None:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


def retry_wait(jitter_wait: float, retry_after: float | None, cap: float) -> float:
    """The wait before the next attempt: backoff, but never shorter than Retry-After; capped."""
    wait = max(jitter_wait, retry_after or 0.0)
    return min(wait, cap)
