"""Enqueue, fetch, leases, outcomes, fencing, cancel and retry, on every backend."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from conveyor.backends.base import Backend, Outcome, OutcomeKind
from conveyor.errors import ConflictError, JobNotFoundError
from conveyor.job import Job, JobStatus, task_error
from tests.contract.conftest import ShiftedClock
from tests.contract.helpers import done, enqueue, make_job

pytestmark = pytest.mark.timeout(30)


async def test_batch_enqueue_fetch_and_ack(backend: Backend) -> None:
    before = await backend.now()
    stored = await enqueue(backend, *(make_job(args=[i]) for i in range(10)))
    assert [j.status for j in stored] == [JobStatus.PENDING] * 10
    assert all(before <= j.created_at == j.run_at for j in stored)

    first = await backend.fetch(["default"], "w1", 4, 30)
    rest = await backend.fetch(["default"], "w1", 100, 30)
    assert [j.args for j in first + rest] == [[i] for i in range(10)]  # FIFO
    assert len(await backend.fetch(["default"], "w1", 10, 30)) == 0
    for job in first + rest:
        assert job.status is JobStatus.RUNNING
        assert job.attempts == 1
        assert job.lease_owner == "w1"
        assert job.lease_expires_at is not None
        assert job.lease_expires_at > before + 29

    flags = await backend.complete([done(j, "w1", result={"n": j.args[0]}) for j in first + rest])
    assert flags == [True] * 10
    record = await backend.get_job(stored[3].id)
    assert record is not None
    assert record.status is JobStatus.COMPLETED
    assert record.result == {"n": 3}
    assert record.progress == 100
    assert record.completed_at is not None
    assert record.lease_owner is None
    # A second report of the same attempt is refused.
    assert await backend.complete([done(first[0], "w1")]) == [False]


async def test_jobs_keep_their_fields(backend: Backend) -> None:
    job = make_job(
        "send",
        args=[1, "two", {"three": [3.0, None, True]}],
        kwargs={"to": "ünïcode"},
        queue="mail",
        priority=7,
        max_retries=9,
        timeout=1.5,
        idempotency_key="k",
        callback_url="https://example.com/hook",
        callback_secret="s3cret",
    )
    await enqueue(backend, job)
    record = await backend.get_job(job.id)
    assert record is not None
    assert record.copy(created_at=0.0, run_at=0.0) == job
    assert await backend.get_job("no-such-job") is None


async def test_fetch_only_from_the_given_queues(backend: Backend) -> None:
    a, b = make_job(queue="a"), make_job(queue="b")
    await enqueue(backend, a, b)
    assert [j.id for j in await backend.fetch(["b"], "w", 10, 30)] == [b.id]
    assert [j.id for j in await backend.fetch(["c", "a"], "w", 10, 30)] == [a.id]


async def test_priority_order_within_and_across_queues(backend: Backend) -> None:
    jobs = [
        make_job(queue="a", priority=0, args=["a0"]),
        make_job(queue="b", priority=5, args=["b5"]),
        make_job(queue="a", priority=1, args=["a1"]),
        make_job(queue="a", priority=4, args=["a4"]),
        make_job(queue="b", priority=-1, args=["b-1"]),
    ]
    await enqueue(backend, *jobs)
    order = []
    # Equal priorities in different queues have no defined order between them (on Redis
    # each queue is its own stream, possibly on its own cluster node).
    while batch := await backend.fetch(["a", "b"], "w", 2, 30):
        order += [j.args[0] for j in batch]
    assert order == ["b5", "a4", "a1", "a0", "b-1"]


async def test_expired_lease_hands_the_job_out_again(backend: Backend, clock: ShiftedClock) -> None:
    job = make_job()
    await enqueue(backend, job)
    (first,) = await backend.fetch(["default"], "w1", 10, 30)
    clock.advance(29)
    assert await backend.fetch(["default"], "w2", 10, 30) == []
    clock.advance(2)
    (again,) = await backend.fetch(["default"], "w2", 10, 30)
    assert again.id == job.id
    assert again.attempts == first.attempts + 1 == 2
    assert again.lease_owner == "w2"

    # Fencing: the first worker is still alive after all, but it lost the job.
    assert await backend.complete([done(first, "w1", result="stale")]) == [False]
    assert await backend.renew("w1", {job.id: first.attempts}, 30) == {job.id}
    assert await backend.set_progress(job.id, first.attempts, 50) is False
    assert await backend.complete([done(again, "w2", result="fresh")]) == [True]
    record = await backend.get_job(job.id)
    assert record is not None
    assert record.result == "fresh"
    assert record.attempts == 2


async def test_renewal_keeps_a_long_job_from_being_handed_out_twice(
    backend: Backend, clock: ShiftedClock
) -> None:
    job = make_job()
    await enqueue(backend, job)
    (leased,) = await backend.fetch(["default"], "w1", 10, 10)
    for _ in range(5):  # runs for 40 s under a 10 s lease, renewing every 8 s
        clock.advance(8)
        assert await backend.renew("w1", {job.id: leased.attempts}, 10) == set()
        assert await backend.fetch(["default"], "w2", 10, 10) == []
    assert await backend.renew("w2", {job.id: leased.attempts}, 10) == {job.id}  # not its owner
    assert await backend.renew("w1", {job.id: leased.attempts + 1}, 10) == {job.id}
    assert await backend.renew("w1", {}, 10) == set()
    assert await backend.complete([done(leased, "w1")]) == [True]


async def test_retry_outcome_waits_for_its_backoff(backend: Backend, clock: ShiftedClock) -> None:
    job = make_job()
    await enqueue(backend, job)
    (_leased,) = await backend.fetch(["default"], "w", 10, 30)
    error = task_error("boom", reason="exception", retryable=True, exception_type="ValueError")
    retry_at = await backend.now() + 5
    outcome = Outcome(job.id, "w", 1, OutcomeKind.RETRY, error=error, retry_at=retry_at)
    assert await backend.complete([outcome]) == [True]

    record = await backend.get_job(job.id)
    assert record is not None
    assert record.status is JobStatus.PENDING
    assert record.run_at == pytest.approx(retry_at)
    assert record.error == error
    assert record.attempts == 1
    assert record.lease_owner is None
    assert await backend.fetch(["default"], "w", 10, 30) == []
    clock.advance(5.1)
    (again,) = await backend.fetch(["default"], "w", 10, 30)
    assert again.attempts == 2


async def test_released_job_does_not_spend_an_attempt(backend: Backend) -> None:
    job = make_job()
    await enqueue(backend, job)
    (_leased,) = await backend.fetch(["default"], "w", 10, 30)
    assert await backend.complete([Outcome(job.id, "w", 1, OutcomeKind.RELEASED)]) == [True]
    (again,) = await backend.fetch(["default"], "w", 10, 30)
    assert again.attempts == 1


async def test_lease_expiry_beyond_the_budget_fails_the_job_then_retry_revives_it(
    backend: Backend, clock: ShiftedClock
) -> None:
    job = make_job(max_retries=1)
    await enqueue(backend, job)
    for attempt in (1, 2):
        (leased,) = await backend.fetch(["default"], "w", 10, 30)
        assert leased.attempts == attempt
        clock.advance(31)  # the worker died
    assert await backend.fetch(["default"], "w", 10, 30) == []
    record = await backend.get_job(job.id)
    assert record is not None
    assert record.status is JobStatus.FAILED
    assert record.error is not None
    assert record.error["details"]["reason"] == "lease_expired"
    assert record.completed_at is not None
    assert record.lease_owner is None

    revived = await backend.retry(job.id)
    assert revived.status is JobStatus.PENDING
    assert revived.attempts == 0
    assert revived.error is None
    (leased,) = await backend.fetch(["default"], "w", 10, 30)
    assert leased.attempts == 1


async def test_failed_outcome_is_final_until_retried(backend: Backend) -> None:
    job = make_job()
    await enqueue(backend, job)
    (_leased,) = await backend.fetch(["default"], "w", 10, 30)
    error = task_error("bad input", reason="non_retryable", retryable=False)
    assert await backend.complete([Outcome(job.id, "w", 1, OutcomeKind.FAILED, error=error)]) == [
        True
    ]
    record = await backend.get_job(job.id)
    assert record is not None
    assert record.status is JobStatus.FAILED
    assert record.error == error
    assert await backend.fetch(["default"], "w", 10, 30) == []
    with pytest.raises(ConflictError):
        await backend.cancel(job.id)

    await backend.retry(job.id)
    with pytest.raises(ConflictError):
        await backend.retry(job.id)  # pending now
    with pytest.raises(JobNotFoundError):
        await backend.retry("no-such-job")
    assert len(await backend.fetch(["default"], "w", 10, 30)) == 1


async def test_cancel_pending_running_and_finished(backend: Backend) -> None:
    pending, running, finished = make_job(), make_job(), make_job()
    await enqueue(backend, running, finished)
    leased = {j.id: j for j in await backend.fetch(["default"], "w", 10, 30)}
    await backend.complete([done(leased[finished.id], "w")])
    await enqueue(backend, pending)

    cancelled = await backend.cancel(pending.id)
    assert cancelled.status is JobStatus.CANCELLED
    assert cancelled.completed_at is not None
    assert await backend.fetch(["default"], "w", 10, 30) == []

    attempt = leased[running.id].attempts
    stopped = await backend.cancel(running.id)
    assert stopped.status is JobStatus.CANCELLED
    assert stopped.lease_owner is None
    assert await backend.renew("w", {running.id: attempt}, 30) == {running.id}
    assert await backend.set_progress(running.id, attempt, 10) is False
    assert await backend.complete([done(leased[running.id], "w")]) == [False]
    record = await backend.get_job(running.id)
    assert record is not None
    assert record.status is JobStatus.CANCELLED

    with pytest.raises(ConflictError):
        await backend.cancel(finished.id)
    with pytest.raises(ConflictError):
        await backend.cancel(pending.id)
    with pytest.raises(JobNotFoundError):
        await backend.cancel("no-such-job")

    assert (await backend.retry(pending.id)).status is JobStatus.PENDING
    assert [j.id for j in await backend.fetch(["default"], "w", 10, 30)] == [pending.id]


async def test_progress_is_fenced_by_attempt(backend: Backend) -> None:
    job = make_job()
    await enqueue(backend, job)
    assert await backend.set_progress(job.id, 0, 10) is False  # not running
    (leased,) = await backend.fetch(["default"], "w", 10, 30)
    assert await backend.set_progress(job.id, leased.attempts, 40) is True
    assert await backend.set_progress(job.id, leased.attempts + 1, 60) is False
    record = await backend.get_job(job.id)
    assert record is not None
    assert record.progress == 40


async def test_complete_batch_mixes_accepted_and_refused(backend: Backend) -> None:
    a, b = make_job(), make_job()
    await enqueue(backend, a, b)
    leased = await backend.fetch(["default"], "w", 10, 30)
    outcomes = [done(leased[0], "w"), done(leased[1], "intruder"), done(leased[0], "w")]
    assert await backend.complete(outcomes) == [True, False, False]
    assert await backend.complete([]) == []


async def test_two_handles_share_one_store(
    backend: Backend, make_backend: Callable[[], Backend]
) -> None:
    other = make_backend()
    await other.open()
    try:
        job = make_job()
        await enqueue(backend, job)
        (leased,) = await other.fetch(["default"], "w", 10, 30)
        assert leased.id == job.id
        assert await backend.complete([done(leased, "w", 1)]) == [True]
        record = await other.get_job(job.id)
        assert record is not None
        assert record.status is JobStatus.COMPLETED
    finally:
        if other is not backend:
            await other.aclose()


async def test_due_jobs_are_found_among_many_delayed_ones(backend: Backend) -> None:
    # Delayed jobs of the same priority level must not hide (or slow down) due ones.
    now = await backend.now()
    later = [make_job(priority=p % 3, args=[i]) for i, p in enumerate(range(3000))]
    for job in later:
        job.run_at = now + 3600
    await enqueue(backend, *later)
    due = [make_job(priority=1, args=["due-1"]), make_job(priority=0, args=["due-0"])]
    await enqueue(backend, *due)
    batch = await backend.fetch(["default"], "w", 10, 30)
    assert [j.args[0] for j in batch] == ["due-1", "due-0"]


async def test_jobs_of_a_cancelled_fetch_come_back_without_waiting_for_leases(
    backend: Backend,
) -> None:
    await enqueue(backend, *(make_job(args=[i]) for i in range(3)))
    fetching = asyncio.create_task(backend.fetch(["default"], "w", 10, 30))
    await asyncio.sleep(0)
    fetching.cancel()
    try:
        seen = await fetching  # it may have finished before the cancel arrived
    except asyncio.CancelledError:
        seen = []
    again: list[Job] = []
    deadline = time.monotonic() + 5  # far less than the 30 s lease
    while len(seen) + len(again) < 3 and time.monotonic() < deadline:
        again += await backend.fetch(["default"], "w2", 10, 30)
        await asyncio.sleep(0.01)
    assert sorted(j.args[0] for j in [*seen, *again]) == [0, 1, 2]
