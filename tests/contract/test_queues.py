"""Queue control: pause/resume and maximum length, on every backend."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.backends.base import Backend
from conveyor.errors import QueueFullError
from tests.contract.conftest import ShiftedClock
from tests.contract.helpers import done, enqueue, make_job

pytestmark = pytest.mark.timeout(30)


async def _stats(backend: Backend, queue: str) -> dict[str, object]:
    for q in await backend.queue_stats():
        if q.name == queue:
            return {
                "pending": q.pending,
                "scheduled": q.scheduled,
                "paused": q.paused,
                "max_length": q.max_length,
            }
    raise AssertionError(f"queue {queue} not in stats")


async def test_fetch_skips_a_paused_queue(backend: Backend) -> None:
    a = make_job(queue="a")
    b = make_job(queue="b")
    await enqueue(backend, a, b)
    await backend.pause_queue("a")
    assert [j.id for j in await backend.fetch(["a"], "w", 10, 30)] == []
    assert [j.id for j in await backend.fetch(["a", "b"], "w", 10, 30)] == [b.id]
    stats = await _stats(backend, "a")
    assert stats["paused"] is True
    assert stats["pending"] == 1
    await backend.resume_queue("a")
    assert [j.id for j in await backend.fetch(["a"], "w", 10, 30)] == [a.id]
    assert (await _stats(backend, "a"))["paused"] is False


async def test_pause_is_seen_by_every_handle(backend: Backend, make_backend: object) -> None:
    other: Backend = make_backend()  # type: ignore[operator]
    await other.open()
    try:
        await enqueue(backend, make_job(queue="shared"))
        await other.pause_queue("shared")
        assert await backend.fetch(["shared"], "w", 10, 30) == []
        await other.resume_queue("shared")
        assert len(await backend.fetch(["shared"], "w", 10, 30)) == 1
    finally:
        await other.aclose()


async def test_paused_queue_does_not_hold_expired_leases_or_wake_idle_workers(
    backend: Backend, clock: ShiftedClock
) -> None:
    job = make_job(queue="p")
    await enqueue(backend, job)
    (leased,) = await backend.fetch(["p"], "w1", 1, 5)
    await backend.pause_queue("p")
    await enqueue(backend, make_job(queue="p"))
    clock.advance(10)  # the lease expired, but the queue is paused: nobody takes it over
    assert await backend.fetch(["p"], "w2", 10, 30) == []
    started = time.monotonic()
    await backend.wait_for_work(["p"], timeout=0.3)  # pending work of a paused queue
    assert time.monotonic() - started >= 0.2
    await backend.resume_queue("p")
    got = await backend.fetch(["p"], "w2", 10, 30)
    assert leased.id in {j.id for j in got}
    assert len(got) == 2


async def test_resume_wakes_an_idle_worker(backend: Backend) -> None:
    await backend.pause_queue("r")
    await enqueue(backend, make_job(queue="r"))
    waiter = asyncio.create_task(backend.wait_for_work(["r"], timeout=5))
    await asyncio.sleep(0.2)
    assert not waiter.done()
    started = time.monotonic()
    await backend.resume_queue("r")
    await asyncio.wait_for(waiter, 3)
    assert time.monotonic() - started < 1.5


async def test_a_paused_empty_queue_is_listed(backend: Backend) -> None:
    await backend.pause_queue("idle")
    stats = await _stats(backend, "idle")
    assert stats == {"pending": 0, "scheduled": 0, "paused": True, "max_length": None}


async def test_max_length_refuses_the_whole_batch(backend: Backend) -> None:
    await backend.configure_queue("small", max_length=3)
    assert (await _stats(backend, "small"))["max_length"] == 3
    await enqueue(backend, make_job(queue="small"), make_job(queue="small"))
    batch = [make_job(queue="small"), make_job(queue="small")]
    with pytest.raises(QueueFullError) as refused:
        await enqueue(backend, *batch)
    assert refused.value.queue == "small"
    assert refused.value.retry_after > 0
    for job in batch:  # nothing of the batch was stored
        assert await backend.get_job(job.id) is None
    stats = await _stats(backend, "small")
    assert stats["pending"] == 2
    await enqueue(backend, make_job(queue="small"))  # exactly up to the maximum
    with pytest.raises(QueueFullError):
        await enqueue(backend, make_job(queue="small"))


async def test_max_length_counts_scheduled_jobs(backend: Backend) -> None:
    await backend.configure_queue("later", max_length=2)
    in_an_hour = await backend.now() + 3600
    await enqueue(backend, make_job(queue="later", run_at=in_an_hour))
    await enqueue(backend, make_job(queue="later"))
    with pytest.raises(QueueFullError):
        await enqueue(backend, make_job(queue="later", run_at=in_an_hour))


async def test_running_and_finished_jobs_make_room(backend: Backend) -> None:
    await backend.configure_queue("room", max_length=1)
    await enqueue(backend, make_job(queue="room"))
    with pytest.raises(QueueFullError):
        await enqueue(backend, make_job(queue="room"))
    (leased,) = await backend.fetch(["room"], "w", 1, 30)
    await enqueue(backend, make_job(queue="room"))  # a running job no longer waits
    assert await backend.complete([done(leased, "w")]) == [True]


async def test_idempotency_hits_do_not_count(backend: Backend) -> None:
    await backend.configure_queue("idem", max_length=1)
    first = make_job(queue="idem", idempotency_key="k")
    (stored,) = await enqueue(backend, first)
    again = await backend.enqueue(
        [make_job(queue="idem", idempotency_key="k"), make_job(queue="idem", idempotency_key="k")],
        idempotency_ttl=3600,
    )
    assert [r.created for r in again] == [False, False]
    assert {r.job.id for r in again} == {stored.id}
    with pytest.raises(QueueFullError):
        await enqueue(backend, make_job(queue="idem", idempotency_key="other"))


async def test_duplicate_keys_in_one_batch_count_once(backend: Backend) -> None:
    await backend.configure_queue("dup", max_length=1)
    results = await backend.enqueue(
        [make_job(queue="dup", idempotency_key="d"), make_job(queue="dup", idempotency_key="d")],
        idempotency_ttl=3600,
    )
    assert [r.created for r in results] == [True, False]


async def test_other_queues_and_cleared_limits_are_unaffected(backend: Backend) -> None:
    await backend.configure_queue("tiny", max_length=0)
    with pytest.raises(QueueFullError):
        await enqueue(backend, make_job(queue="tiny"))
    await enqueue(backend, make_job(queue="free"), make_job(queue="free"))
    await backend.configure_queue("tiny", max_length=None)
    await enqueue(backend, make_job(queue="tiny"))
    assert (await _stats(backend, "tiny"))["max_length"] is None


async def test_a_batch_over_several_queues_is_refused_whole(backend: Backend) -> None:
    await backend.configure_queue("full", max_length=0)
    ok = make_job(queue="roomy")
    refused = make_job(queue="full")
    with pytest.raises(QueueFullError):
        await enqueue(backend, ok, refused)
    assert await backend.get_job(ok.id) is None
    assert await backend.get_job(refused.id) is None


async def test_concurrent_submits_never_exceed_the_limit(backend: Backend) -> None:
    await backend.configure_queue("race", max_length=5)

    async def one() -> bool:
        try:
            await enqueue(backend, make_job(queue="race"))
        except QueueFullError:
            return False
        return True

    accepted = await asyncio.gather(*(one() for _ in range(20)))
    assert sum(accepted) == 5
    assert (await _stats(backend, "race"))["pending"] == 5
