"""Listing, counting, purging and the event feed, on every backend."""

from __future__ import annotations

import pytest

from conveyor.backends.base import Backend, JobFilter, Outcome, OutcomeKind
from conveyor.job import JobStatus, task_error
from tests.contract.conftest import ShiftedClock
from tests.contract.helpers import done, enqueue, make_job

pytestmark = pytest.mark.timeout(30)


async def test_list_jobs_pages_newest_first(backend: Backend) -> None:
    jobs = [make_job(args=[i]) for i in range(5)]
    for job in jobs:  # one batch each: ids grow with creation time
        await enqueue(backend, job)
    newest_first = [j.id for j in reversed(jobs)]

    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        page = await backend.list_jobs(JobFilter(), limit=2, cursor=cursor)
        seen += [j.id for j in page.items]
        pages += 1
        if page.next_cursor is None:
            break
        assert page.next_cursor == page.items[-1].id
        cursor = page.next_cursor
    assert seen == newest_first
    assert pages == 3

    exact = await backend.list_jobs(JobFilter(), limit=5)
    assert [j.id for j in exact.items] == newest_first
    assert exact.next_cursor is None


async def test_list_jobs_filters(backend: Backend) -> None:
    a = make_job("resize", queue="images")
    b = make_job("resize", queue="thumbs")
    c = make_job("email", queue="images")
    await enqueue(backend, a, b, c)
    (leased,) = await backend.fetch(["thumbs"], "w", 1, 30)

    async def ids(**filters: object) -> set[str]:
        page = await backend.list_jobs(JobFilter(**filters), limit=10)  # type: ignore[arg-type]
        return {j.id for j in page.items}

    assert await ids() == {a.id, b.id, c.id}
    assert await ids(type="resize") == {a.id, b.id}
    assert await ids(queue="images") == {a.id, c.id}
    assert await ids(status=JobStatus.RUNNING) == {leased.id} == {b.id}
    assert await ids(status=JobStatus.PENDING, type="resize") == {a.id}
    assert await ids(queue="nowhere") == set()


async def test_queue_stats_counts_each_state(backend: Backend, clock: ShiftedClock) -> None:
    later = await backend.now() + 3600
    jobs = [make_job(queue="q") for _ in range(6)]
    await enqueue(backend, *jobs, make_job(queue="q", run_at=later), make_job(queue="other"))
    leased = await backend.fetch(["q"], "w", 4, 30)
    error = task_error("x", reason="exception", retryable=False)
    await backend.complete(
        [done(leased[0], "w"), Outcome(leased[1].id, "w", 1, OutcomeKind.FAILED, error=error)]
    )
    await backend.cancel(leased[2].id)

    stats = {s.name: s for s in await backend.queue_stats()}
    assert set(stats) == {"q", "other"}
    q = stats["q"]
    assert (q.pending, q.scheduled, q.running) == (2, 1, 1)
    assert (q.completed, q.failed, q.cancelled) == (1, 1, 1)
    assert stats["other"].pending == 1
    assert not q.paused


async def test_purge_removes_expired_records_only(backend: Backend, clock: ShiftedClock) -> None:
    finished, pending = make_job(), make_job(idempotency_key="key")
    await enqueue(backend, finished)
    (leased,) = await backend.fetch(["default"], "w", 1, 30)
    await backend.complete([done(leased, "w")])
    await enqueue(backend, pending, ttl=100)

    assert await backend.purge() == 0
    clock.advance(61)
    assert await backend.purge() == 1
    assert await backend.get_job(finished.id) is None
    assert await backend.get_job(pending.id) is not None  # unfinished jobs are kept

    # The idempotency key outlives neither its ttl nor a purge.
    clock.advance(40)
    await backend.purge()
    (again,) = await backend.enqueue([make_job(idempotency_key="key")], idempotency_ttl=100)
    assert again.created


async def test_events_of_one_job_arrive_in_order(backend: Backend) -> None:
    job = make_job()
    await enqueue(backend, job)
    (leased,) = await backend.fetch(["default"], "w", 1, 30)
    await backend.set_progress(job.id, leased.attempts, 50)
    await backend.complete([done(leased, "w", result=42)])

    events = [e for e in await backend.read_events(None, 100) if e.job_id == job.id]
    assert [e.type for e in events] == [
        "job_created",
        "job_started",
        "job_progress",
        "job_completed",
    ]
    assert [e.id for e in events] == sorted(e.id for e in events)
    assert len({e.id for e in events}) == 4
    assert events[1].data["workerId"] == "w"
    assert events[2].data["progress"] == 50
    assert events[3].data["result"] == 42
    assert all(e.at > 0 for e in events)

    # Resuming from a cursor gives only what came after it.
    after = await backend.read_events(events[1].id, 100)
    assert [e.type for e in after] == ["job_progress", "job_completed"]
    assert await backend.read_events(events[3].id, 100) == []
    assert len(await backend.read_events(None, 2)) == 2


async def test_event_feed_covers_every_transition(backend: Backend, clock: ShiftedClock) -> None:
    job = make_job(max_retries=0)
    await enqueue(backend, job)
    assert len(await backend.fetch(["default"], "w", 1, 30)) == 1
    retry_at = await backend.now()
    await backend.complete([Outcome(job.id, "w", 1, OutcomeKind.RETRY, retry_at=retry_at)])
    assert len(await backend.fetch(["default"], "w", 1, 30)) == 1
    clock.advance(31)
    assert await backend.fetch(["default"], "w", 1, 30) == []  # budget spent: failed
    await backend.retry(job.id)
    await backend.cancel(job.id)
    types = [e.type for e in await backend.read_events(None, 100)]
    assert types == [
        "job_created",
        "job_started",
        "job_retrying",
        "job_started",
        "job_failed",
        "job_created",
        "job_cancelled",
    ]
