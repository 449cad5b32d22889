"""Exponential backoff with full jitter (AWS architecture blog), as pure functions."""

from __future__ import annotations

import random


def ceiling(attempt: int, base: float, cap: float) -> float:
    """The upper bound of the wait before retry ``attempt`` (1-based)."""
    if attempt < 1:
        return 0.0
    # Cap the exponent so huge attempt counts never overflow a float.
    return float(min(cap, base * (2 ** min(attempt - 1, 62))))


def full_jitter(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """A wait drawn uniformly from [0, ceiling]: spreads retries of many workers apart."""
    upper = ceiling(attempt, base, cap)
    return (rng or random).uniform(0.0, upper)
