"""Idempotency keys: one job per key, even under concurrent submits."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import pytest

from conveyor.backends.base import Backend, JobFilter
from tests.contract.conftest import ShiftedClock
from tests.contract.helpers import make_job

pytestmark = pytest.mark.timeout(30)


async def test_a_remembered_key_returns_the_first_job(
    backend: Backend, clock: ShiftedClock
) -> None:
    (first,) = await backend.enqueue([make_job(idempotency_key="k", args=[1])], idempotency_ttl=60)
    (second,) = await backend.enqueue([make_job(idempotency_key="k", args=[2])], idempotency_ttl=60)
    assert first.created
    assert not second.created
    assert second.job.id == first.job.id
    assert second.job.args == [1]

    clock.advance(61)
    (third,) = await backend.enqueue([make_job(idempotency_key="k", args=[3])], idempotency_ttl=60)
    assert third.created
    assert third.job.id != first.job.id


async def test_duplicate_keys_within_one_batch(backend: Backend) -> None:
    results = await backend.enqueue(
        [make_job(idempotency_key="k"), make_job(), make_job(idempotency_key="k")],
        idempotency_ttl=60,
    )
    assert [r.created for r in results] == [True, True, False]
    assert results[2].job.id == results[0].job.id
    assert len((await backend.list_jobs(JobFilter(), limit=10)).items) == 2


async def test_concurrent_submits_create_exactly_one_job(
    backend: Backend, make_backend: Callable[[], Backend]
) -> None:
    others = [make_backend() for _ in range(3)]
    for other in others:
        await other.open()
    try:
        handles = [backend, *others]
        results = await asyncio.gather(
            *(
                handles[i % len(handles)].enqueue(
                    [make_job(idempotency_key="same", args=[i])], idempotency_ttl=60
                )
                for i in range(40)
            )
        )
    finally:
        for other in others:
            if other is not backend:
                await other.aclose()
    flat = [r for batch in results for r in batch]
    assert sum(r.created for r in flat) == 1
    assert len({r.job.id for r in flat}) == 1
    assert len((await backend.list_jobs(JobFilter(), limit=100)).items) == 1
