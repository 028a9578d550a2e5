"""Retry delays: capped exponential backoff with full jitter.

Full jitter spreads the retries of jobs that failed together over the whole window, so a
dependency that recovers is not hit by a synchronized storm.
"""

from __future__ import annotations

import random


def retry_delay(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Delay before retrying after attempt number ``attempt`` (1-based) failed.

    Uniform in ``[0, min(cap, base * 2 ** (attempt - 1))]``.
    """
    exponent = min(max(attempt - 1, 0), 62)  # 2**62 s is already far past any cap
    ceiling = min(cap, base * (2.0**exponent))
    return (rng or random).uniform(0.0, ceiling)
