"""Lease rules for outbox rows claimed by a relay.

A relay claims a batch by writing its token and an expiry on each row; another
relay may take a row only once that expiry has passed, so a relay that died
mid-batch is taken over after its lease ends, and a live one is never doubled.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Lease:
    token: str
    expires_at: float


def new_token(owner: str) -> str:
    """A lease token unique to one claim; ``owner`` makes it readable in the table."""
    return f"{owner}/{secrets.token_hex(6)}"


def grant(owner: str, now: float, duration: float) -> Lease:
    if duration <= 0:
        raise ValueError("lease duration must be > 0")
    return Lease(token=new_token(owner), expires_at=now + duration)


def is_free(expires_at: float | None, now: float) -> bool:
    """A row may be claimed when it was never leased or its lease has ended."""
    return expires_at is None or expires_at <= now


def still_held(lease: Lease, now: float, margin: float) -> bool:
    """Whether the holder may still act on the rows: its lease ends after ``now + margin``.

    A relay checks this before publishing, so it stops before another relay may take over.
    """
    return lease.expires_at > now + margin
