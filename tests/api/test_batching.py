"""Group commit of submits: concurrent submits share a store call, answers stay per request."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

import httpx
import pytest

from conveyor import Conveyor
from conveyor.api.batching import SubmitBatcher
from conveyor.backends.base import EnqueueResult
from conveyor.errors import BackendUnavailableError, QueueFullError
from conveyor.job import Job
from conveyor.task import make_job_options

from .conftest import assert_error


def count_store_calls(conveyor: Conveyor) -> list[int]:
    """Record the size of every ``enqueue_jobs`` call."""
    sizes: list[int] = []
    original = conveyor.enqueue_jobs

    async def counted(jobs: Sequence[Job]) -> list[EnqueueResult]:
        sizes.append(len(jobs))
        return await original(jobs)

    conveyor.enqueue_jobs = counted  # type: ignore[method-assign]
    return sizes


def build(conveyor: Conveyor, n: int = 1, **options: Any) -> Job:
    task = conveyor.get_task("add")
    return task.build_job([n, 1], {}, make_job_options(**options), 0.0)


async def test_concurrent_submits_share_one_store_call(conveyor: Conveyor) -> None:
    sizes = count_store_calls(conveyor)
    batcher = SubmitBatcher(conveyor)
    jobs = [build(conveyor, i) for i in range(20)]
    results = await asyncio.gather(*(batcher.enqueue(job) for job in jobs))
    assert sizes == [20]
    assert [r.job.id for r in results] == [j.id for j in jobs]
    assert all(r.created for r in results)


async def test_submits_arriving_during_a_round_leave_together(conveyor: Conveyor) -> None:
    sizes = count_store_calls(conveyor)
    batcher = SubmitBatcher(conveyor)
    first = asyncio.ensure_future(batcher.enqueue(build(conveyor)))
    await asyncio.sleep(0)  # the first round leaves with one job
    rest = [asyncio.ensure_future(batcher.enqueue(build(conveyor, i))) for i in range(5)]
    await asyncio.gather(first, *rest)
    assert sizes == [1, 5]


async def test_one_store_call_per_queue(conveyor: Conveyor) -> None:
    sizes = count_store_calls(conveyor)
    batcher = SubmitBatcher(conveyor)
    jobs = [build(conveyor, i, queue="a" if i % 2 else "b") for i in range(6)]
    results = await asyncio.gather(*(batcher.enqueue(job) for job in jobs))
    assert sorted(sizes) == [3, 3]
    assert [r.job.queue for r in results] == [j.queue for j in jobs]


async def test_cancelled_submit_is_left_out(conveyor: Conveyor) -> None:
    sizes = count_store_calls(conveyor)
    batcher = SubmitBatcher(conveyor)
    kept = asyncio.ensure_future(batcher.enqueue(build(conveyor, 1)))
    dropped = asyncio.ensure_future(batcher.enqueue(build(conveyor, 2)))
    await asyncio.sleep(0)
    dropped.cancel()
    assert (await kept).created
    assert sizes == [1]


async def test_http_concurrent_submits_batched(
    conveyor: Conveyor, client: httpx.AsyncClient
) -> None:
    sizes = count_store_calls(conveyor)
    responses = await asyncio.gather(
        *(
            client.post("/api/v1/jobs", json={"type": "add", "parameters": [i, 1]})
            for i in range(30)
        )
    )
    assert [r.status_code for r in responses] == [202] * 30
    ids = {r.json()["jobId"] for r in responses}
    assert len(ids) == 30
    assert sum(sizes) == 30
    assert len(sizes) < 30  # shared calls
    backend = await conveyor.backend()
    for job_id in ids:
        assert await backend.get_job(job_id) is not None


async def test_http_errors_stay_per_request(conveyor: Conveyor, client: httpx.AsyncClient) -> None:
    sizes = count_store_calls(conveyor)
    bodies: list[dict[str, Any]] = [{"type": "add", "parameters": [i, 1]} for i in range(6)]
    bodies[2] = {"type": "add", "parameters": ["x", 1]}  # 422 before the store
    bodies[4] = {"type": "nope"}  # 422 unknown task
    responses = await asyncio.gather(*(client.post("/api/v1/jobs", json=b) for b in bodies))
    assert [r.status_code for r in responses] == [202, 202, 422, 202, 422, 202]
    assert sum(sizes) == 4


async def test_queue_full_refuses_only_the_overflow(
    conveyor: Conveyor, client: httpx.AsyncClient
) -> None:
    backend = await conveyor.backend()
    await backend.configure_queue("mail", max_length=3)
    sizes = count_store_calls(conveyor)
    responses = await asyncio.gather(
        *(
            client.post("/api/v1/jobs", json={"type": "send_email", "parameters": {"to": f"{i}"}})
            for i in range(5)
        )
    )
    statuses = [r.status_code for r in responses]
    assert sorted(statuses) == [202, 202, 202, 429, 429]
    for r in responses:
        if r.status_code == 429:
            error = assert_error(r, 429, "QUEUE_FULL")
            assert error["details"]["queue"] == "mail"
            assert r.headers["retry-after"]
    stats = {s.name: s for s in await backend.queue_stats()}
    assert stats["mail"].pending == 3
    assert max(sizes) > 1  # the batch was tried first, then one by one


async def test_queue_full_batch_retries_in_arrival_order(conveyor: Conveyor) -> None:
    backend = await conveyor.backend()
    await backend.configure_queue("default", max_length=2)
    batcher = SubmitBatcher(conveyor)
    jobs = [build(conveyor, i) for i in range(4)]
    outcomes = await asyncio.gather(*(batcher.enqueue(j) for j in jobs), return_exceptions=True)
    assert [isinstance(o, EnqueueResult) for o in outcomes] == [True, True, False, False]
    assert all(isinstance(o, QueueFullError) for o in outcomes[2:])


async def test_same_idempotency_key_in_one_batch(
    conveyor: Conveyor, client: httpx.AsyncClient
) -> None:
    sizes = count_store_calls(conveyor)
    responses = await asyncio.gather(
        *(
            client.post(
                "/api/v1/jobs",
                json={"type": "add", "parameters": [1, 2]},
                headers={"Idempotency-Key": "k1"},
            )
            for _ in range(5)
        )
    )
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 202]
    assert len({r.json()["jobId"] for r in responses}) == 1
    assert sum(sizes) == 5


async def test_store_failure_reaches_every_caller(
    conveyor: Conveyor, client: httpx.AsyncClient
) -> None:
    calls = 0

    async def broken(jobs: Sequence[Job]) -> list[EnqueueResult]:
        nonlocal calls
        calls += 1
        raise BackendUnavailableError("store down")

    conveyor.enqueue_jobs = broken  # type: ignore[method-assign]
    responses = await asyncio.gather(
        *(client.post("/api/v1/jobs", json={"type": "add", "parameters": [i, 1]}) for i in range(4))
    )
    for r in responses:
        assert_error(r, 503, "UNAVAILABLE")
    assert calls < 4


@pytest.mark.parametrize("count", [1, 300])
async def test_large_batches_are_split(conveyor: Conveyor, count: int) -> None:
    sizes = count_store_calls(conveyor)
    batcher = SubmitBatcher(conveyor, max_batch=128)
    results = await asyncio.gather(*(batcher.enqueue(build(conveyor, i)) for i in range(count)))
    assert len(results) == count
    assert all(s <= 128 for s in sizes)
    assert sum(sizes) == count
