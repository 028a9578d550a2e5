"""Retry delays."""

from __future__ import annotations

import random

from conveyor.backoff import retry_delay


def test_backoff_is_capped_full_jitter() -> None:
    rng = random.Random(7)
    delays = [retry_delay(attempt, 1.0, 60.0, rng) for attempt in range(1, 30) for _ in range(50)]
    assert all(0 <= d <= 60 for d in delays)
    assert max(retry_delay(1, 1.0, 60.0, rng) for _ in range(500)) <= 1.0
    assert max(retry_delay(10, 1.0, 60.0, rng) for _ in range(500)) > 30  # spread, not fixed
    assert retry_delay(10_000, 1.0, 5.0, rng) <= 5.0
