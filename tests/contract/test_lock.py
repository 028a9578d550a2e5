"""The leader lock: one holder at a time, fencing tokens that only grow."""

from __future__ import annotations

import asyncio

from conveyor.backends.base import Backend

from .conftest import ShiftedClock


async def test_one_holder_at_a_time_and_tokens_grow(backend: Backend, clock: ShiftedClock) -> None:
    first = await backend.acquire_lock("scheduler", "a", 10)
    assert first is not None
    assert await backend.acquire_lock("scheduler", "b", 10) is None
    assert await backend.acquire_lock("scheduler", "a", 10) == first  # renewal keeps it
    clock.advance(11)
    second = await backend.acquire_lock("scheduler", "b", 10)
    assert second is not None
    assert second > first  # the new holder fences out the old one
    assert await backend.acquire_lock("scheduler", "a", 10) is None


async def test_release_hands_over_at_once(backend: Backend) -> None:
    first = await backend.acquire_lock("deliverer", "a", 30)
    await backend.release_lock("deliverer", "b")  # not the holder: no effect
    assert await backend.acquire_lock("deliverer", "b", 30) is None
    await backend.release_lock("deliverer", "a")
    second = await backend.acquire_lock("deliverer", "b", 30)
    assert first is not None
    assert second is not None
    assert second > first


async def test_locks_are_independent_by_name(backend: Backend) -> None:
    assert await backend.acquire_lock("one", "a", 30) is not None
    assert await backend.acquire_lock("two", "b", 30) is not None


async def test_concurrent_contenders_get_one_winner(backend: Backend) -> None:
    results = await asyncio.gather(*(backend.acquire_lock("race", f"w{i}", 30) for i in range(20)))
    assert sum(1 for r in results if r is not None) == 1
