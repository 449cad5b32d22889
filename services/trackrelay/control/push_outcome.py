"""How a forwarder reads analytics' answer to a push (the push contract: docs/contracts.md).

2xx: accepted. 429/503: overloaded, back off (honour Retry-After). Other 4xx
except 408: the batch itself is refused (permanent; 400, 413 and 422 blame its
content). 408, other 5xx, timeouts and resets: failed, retry. A push whose
ownership window closed before it was sent is ``EXPIRED``: nothing went out.
Pure: the HTTP adapter hands in the status and the header text.
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
    EXPIRED = "expired"


CONTENT_STATUSES = frozenset({400, 413, 422})
"""Refusals that blame what the batch holds: a lone event refused so is a poison event."""


@dataclass(frozen=True, slots=True)
class PushResult:
    outcome: Outcome
    retry_after: float | None = None
    detail: str = ""
    status: int | None = None
    """The HTTP status, when analytics answered at all."""
    timed_out: bool = False
    """No complete answer within the push's deadline (a failure that signals saturation,
    unlike a refused connection)."""

    @property
    def blames_content(self) -> bool:
        return self.status in CONTENT_STATUSES

    @property
    def too_large(self) -> bool:
        return self.status == 413

    @property
    def congests(self) -> bool:
        """A sign analytics is saturated: an overload answer, or no answer at all
        (timeout, reset). The adaptive window shrinks on it."""
        return self.outcome is Outcome.OVERLOADED or (
            self.outcome is Outcome.FAILED and self.status is None
        )

    @property
    def overloads(self) -> bool:
        """A sign our load is too much for analytics: an overload answer or a timeout (a
        refused or reset connection says analytics is down, not busy)."""
        return self.outcome is Outcome.OVERLOADED or self.timed_out

    @property
    def analytics_up(self) -> bool:
        """Analytics judged the request on its merits (accepted it, or refused what it
        holds): the circuit breaker counts it as a success."""
        return self.outcome in (Outcome.ACCEPTED, Outcome.REJECTED)


def classify(
    status: int, retry_after: str | None = None, now: datetime | None = None
) -> PushResult:
    if 200 <= status < 300:
        return PushResult(Outcome.ACCEPTED, status=status)
    if status in (429, 503):
        return PushResult(
            Outcome.OVERLOADED, parse_retry_after(retry_after, now), f"HTTP {status}", status
        )
    if 400 <= status < 500 and status != 408:
        return PushResult(Outcome.REJECTED, detail=f"HTTP {status}", status=status)
    return PushResult(Outcome.FAILED, detail=f"HTTP {status}", status=status)


def from_answer(status: int, headers: dict[str, str], text: bytes) -> PushResult:
    """The push's result from analytics' answer: its status, its headers (lower-case names)
    and the first bytes of its body, which only name a refusal. A 3xx is a failure that
    says where it points (pushes are never redirected)."""
    result = classify(status, headers.get("retry-after"))
    if result.outcome is Outcome.REJECTED:
        shown = text[:500].decode("utf-8", "replace")
        return PushResult(Outcome.REJECTED, detail=f"HTTP {status}: {shown}", status=status)
    if 300 <= status < 400:
        where = headers.get("location", "(no Location)")
        return PushResult(
            Outcome.FAILED,
            detail=f"HTTP {status}: analytics redirects to {where}; pushes are not "
            "redirected (set the analytics URL to where it points)",
            status=status,
        )
    return result


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
