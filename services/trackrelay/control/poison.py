"""What a forwarder does with a batch after analytics answered: ack, retry, split or dead-letter.

Pure. The rules tell a poison event (one event analytics cannot take, while it
takes others) from an outage (analytics takes nothing): only the first may end
in the dead-letter queue.

- accepted: acknowledge.
- overloaded (429/503) or expired (never sent): retry; never a sign of poison.
- refused (4xx but 408 and 429; 400, 413 and 422 blame the content): split in
  halves; a lone event is dead-lettered only if analytics accepted something since
  this batch began to fail (a wrong URL, or a WAF answering 400 to everything,
  refuses everything: that is a wait, not poison), or, refused as too large
  (413), once analytics has accepted any push.
- failed (5xx, 408, timeouts, resets): retry; after ``split_after`` failures, and
  only if analytics accepted something meanwhile, split, and dead-letter a lone
  event.

``next_step`` names the step; ``after_push`` gives the forwarder the step with
what applying it needs (the failure history to keep, the dead-letter reason,
the Retry-After to honour), so the worker only carries it out.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from trackrelay.control.push_outcome import Outcome, PushResult


class Step(StrEnum):
    ACK = "ack"
    RETRY = "retry"
    SPLIT = "split"
    DEAD_LETTER = "dead_letter"


@dataclass(frozen=True, slots=True)
class FailureHistory:
    """A held batch's failures so far: how many in a row, and since when."""

    failures: int = 0
    failing_since: float | None = None

    def after_failure(self, now: float) -> FailureHistory:
        since = self.failing_since if self.failing_since is not None else now
        return FailureHistory(self.failures + 1, since)


def others_accepted(history: FailureHistory, last_accepted_at: float | None) -> bool:
    """Whether analytics accepted some push after this batch first failed."""
    return (
        history.failing_since is not None
        and last_accepted_at is not None
        and last_accepted_at > history.failing_since
    )


def next_step(
    result: PushResult,
    batch_len: int,
    history: FailureHistory,
    last_accepted_at: float | None,
    split_after: int,
) -> Step:
    """The step for a batch of ``batch_len`` events after ``result``.

    ``history`` already counts this failure; ``last_accepted_at`` is when
    analytics last accepted any push from this forwarder (None: never).
    """
    if result.outcome is Outcome.ACCEPTED:
        return Step.ACK
    if result.outcome in (Outcome.OVERLOADED, Outcome.EXPIRED):
        return Step.RETRY
    healthy_elsewhere = others_accepted(history, last_accepted_at)
    if result.outcome is Outcome.REJECTED:
        if batch_len > 1:
            return Step.SPLIT
        # Poison only while analytics takes other events: a WAF or a broken analytics
        # that refuses everything (even "for its content") is a wait, not poison. One
        # event too large alone (413) is poison once analytics has taken any push: its
        # size, not analytics' state, is what is refused.
        too_large_alone = result.too_large and last_accepted_at is not None
        return Step.DEAD_LETTER if healthy_elsewhere or too_large_alone else Step.RETRY
    # FAILED: transient unless it keeps failing while others get through.
    if history.failures < split_after or not healthy_elsewhere:
        return Step.RETRY
    return Step.SPLIT if batch_len > 1 else Step.DEAD_LETTER


@dataclass(frozen=True, slots=True)
class Delivered:
    """Analytics accepted the batch: acknowledge it."""


@dataclass(frozen=True, slots=True)
class Split:
    """Halve the batch; the halves inherit ``history``."""

    history: FailureHistory
    too_large: bool
    """Refused as too large (413): the push byte cap comes down too."""


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """The batch is one poison event: to the dead-letter queue with ``reason``."""

    reason: str


@dataclass(frozen=True, slots=True)
class RetryAfter:
    """Keep the batch with ``history`` and push it again after a wait."""

    result: PushResult
    history: FailureHistory
    retry_after: float | None
    """Analytics' Retry-After, when the forwarder honours it: the shortest wait."""


@dataclass(frozen=True, slots=True)
class Resend:
    """Nothing was sent (the ownership window closed first): check ownership, push again."""


AfterPush = Delivered | Split | DeadLetter | RetryAfter | Resend


def after_push(
    result: PushResult,
    batch_len: int,
    history: FailureHistory,
    last_accepted_at: float | None,
    *,
    split_after: int,
    honor_retry_after: bool,
    now: float,
) -> AfterPush:
    """What to do with a batch of ``batch_len`` events that got ``result`` at ``now``.

    ``history`` is the batch's before this push; a failure or refusal extends it.
    """
    if result.outcome in (Outcome.FAILED, Outcome.REJECTED):
        history = history.after_failure(now)
    step = next_step(result, batch_len, history, last_accepted_at, split_after)
    if step is Step.ACK:
        return Delivered()
    if step is Step.SPLIT:
        return Split(history, result.too_large)
    if step is Step.DEAD_LETTER:
        return DeadLetter(dead_letter_reason(result))
    if result.outcome is Outcome.EXPIRED:
        return Resend()
    return RetryAfter(result, history, result.retry_after if honor_retry_after else None)


def dead_letter_reason(result: PushResult) -> str:
    """Why a lone event goes to the dead-letter queue, as its DLQ entry says."""
    if result.outcome is Outcome.REJECTED:
        return f"rejected by analytics: {result.detail}"
    return f"failed alone while analytics accepted other events: {result.detail}"


def lowered_byte_cap(current: int | None, refused_bytes: int) -> int | None:
    """The push byte cap after analytics refused a body of ``refused_bytes`` (413).

    Half the refused size, never below 1 byte; None when that would not lower it.
    """
    cap = max(1, refused_bytes // 2)
    return cap if current is None or cap < current else None


def split_to_byte_cap(sizes: list[int], cap: int | None) -> list[int]:
    """Cut points that split a batch of events (their byte sizes) into runs under ``cap``.

    Returns the run lengths, in order. An event larger than the cap goes alone.
    """
    if cap is None or not sizes:
        return [len(sizes)] if sizes else []
    runs: list[int] = []
    count = total = 0
    for size in sizes:
        if count and total + size > cap:
            runs.append(count)
            count = total = 0
        count += 1
        total += size
    runs.append(count)
    return runs
