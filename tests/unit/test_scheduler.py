"""The scheduler service on the in-memory store: fires, dedup, misfires, overlap, leadership.

Most tests drive one tick at a time with :meth:`Scheduler.fire_due` and an explicit store
time, so they need no waiting; a few run the real loop for about a second.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable

import pytest

from conveyor import Conveyor, JobStatus
from conveyor.backends.base import Backend, JobFilter, MisfirePolicy, OverlapPolicy, Schedule
from conveyor.job import Job
from conveyor.scheduling.schedule import fire_key
from conveyor.scheduling.scheduler import LOCK_NAME, Scheduler
from conveyor.worker import Worker
from tests.conftest import running

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    app = make_app(lease_seconds=1.0)

    @app.task()
    async def tick(n: int = 0) -> int:
        return n

    return app


async def jobs_of(backend: Backend) -> list[Job]:
    return (await backend.list_jobs(JobFilter(), limit=10_000)).items


async def leader(app: Conveyor, **kwargs: object) -> Scheduler:
    sched = Scheduler(app, **kwargs)  # type: ignore[arg-type]
    assert await sched.acquire()
    return sched


async def save(backend: Backend, **fields: object) -> Schedule:
    base: dict[str, object] = {"id": "s", "type": "tick", "interval": 1.0}
    base.update(fields)
    return await backend.save_schedule(Schedule(**base))  # type: ignore[arg-type]


async def test_each_due_fire_makes_one_job_with_its_key(app: Conveyor) -> None:
    backend = await app.backend()
    t0 = time.time()
    await save(backend, created_at=t0 - 1, next_run_at=t0, kwargs={"n": 7})
    sched = await leader(app)
    await sched.reload(backend)
    assert await sched.fire_due(t0 - 0.5) == 0  # not due yet
    assert await sched.fire_due(t0 + 0.01) == 1
    assert await sched.fire_due(t0 + 0.02) == 0  # already fired
    assert await sched.fire_due(t0 + 1.01) == 1
    jobs = sorted(await jobs_of(backend), key=lambda j: j.run_at)
    assert [j.idempotency_key for j in jobs] == [fire_key("s", t0), fire_key("s", t0 + 1)]
    assert jobs[0].kwargs == {"n": 7}
    stored = await backend.get_schedule("s")
    assert stored is not None
    assert stored.next_run_at == t0 + 2
    assert stored.last_run_at == t0 + 1
    assert stored.last_job_id == jobs[1].id


async def test_two_leaders_at_once_enqueue_each_fire_once(app: Conveyor) -> None:
    # A leader paused past its lease comes back and fires what the new leader fired.
    backend = await app.backend()
    t0 = time.time()
    await save(backend, created_at=t0 - 1, next_run_at=t0)
    first = await leader(app)
    second = Scheduler(app)
    second._lock._until = time.monotonic() + 60  # believes it leads (split brain)
    for sched in (first, second):
        await sched.reload(backend)
    created = [await s.fire_due(t0 + 2.5) for s in (first, second)]
    assert created == [3, 0]
    assert second.stats.duplicates == 3
    keys = [j.idempotency_key for j in await jobs_of(backend)]
    assert sorted(keys) == sorted(fire_key("s", t0 + k) for k in range(3))


async def test_run_once_after_downtime_then_back_on_time(app: Conveyor) -> None:
    backend = await app.backend()
    t0 = time.time()
    await save(backend, created_at=t0 - 3600, next_run_at=t0 - 3000)
    sched = await leader(app, grace=3.0)
    await sched.reload(backend)
    assert await sched.fire_due(t0 + 0.5) == 4  # one for the missed, three within grace
    keys = {j.idempotency_key for j in await jobs_of(backend)}
    assert fire_key("s", t0 - 3000) in keys
    assert {fire_key("s", t0 - k) for k in (2, 1, 0)} <= keys
    assert sched.stats.missed == 1


async def test_skip_after_downtime(app: Conveyor) -> None:
    backend = await app.backend()
    t0 = time.time()
    await save(
        backend,
        created_at=t0 - 3605,  # fires at t0 - 5 (outside the grace) and t0 + 5
        next_run_at=t0 - 3005,
        misfire_policy=MisfirePolicy.SKIP,
        interval=10.0,
    )
    sched = await leader(app, grace=3.0)
    await sched.reload(backend)
    assert await sched.fire_due(t0) == 0
    stored = await backend.get_schedule("s")
    assert stored is not None
    assert stored.next_run_at is not None
    assert stored.next_run_at == pytest.approx(t0 + 5)


async def test_overlap_skip_waits_for_the_last_job(app: Conveyor) -> None:
    backend = await app.backend()
    t0 = time.time()
    await save(backend, created_at=t0 - 1, next_run_at=t0, overlap=OverlapPolicy.SKIP)
    sched = await leader(app)
    await sched.reload(backend)
    assert await sched.fire_due(t0) == 1
    assert await sched.fire_due(t0 + 1) == 0  # the first job is still pending
    assert sched.stats.skipped == 1
    async with running(Worker(app, concurrency=2)):
        (first,) = await jobs_of(backend)
        await app.job(first.id).wait(timeout=10)
    assert await sched.fire_due(t0 + 2) == 1


async def test_unknown_task_fires_a_job_that_fails_visibly(app: Conveyor) -> None:
    backend = await app.backend()
    t0 = time.time()
    await save(backend, id="gone", type="removed_task", created_at=t0 - 1, next_run_at=t0)
    sched = await leader(app)
    await sched.reload(backend)
    assert await sched.fire_due(t0) == 1
    (job,) = await jobs_of(backend)
    assert job.type == "removed_task"
    async with running(Worker(app, concurrency=1)):
        done = await app.job(job.id).wait(timeout=10)
    assert done.status is JobStatus.FAILED
    assert done.error is not None
    assert done.error["details"]["reason"] == "unknown_task"


async def test_invalid_stored_schedule_is_skipped_not_fatal(app: Conveyor) -> None:
    backend = await app.backend()
    t0 = time.time()
    await save(backend, id="bad", cron="not a cron", interval=None, next_run_at=t0)
    await save(backend, id="good", created_at=t0 - 1, next_run_at=t0)
    sched = await leader(app)
    await sched.reload(backend)
    assert await sched.fire_due(t0) == 1
    assert [j.idempotency_key for j in await jobs_of(backend)] == [fire_key("good", t0)]


async def test_disabled_and_deleted_schedules_do_not_fire(app: Conveyor) -> None:
    backend = await app.backend()
    t0 = time.time()
    await save(backend, id="off", enabled=False, created_at=t0 - 1, next_run_at=t0)
    await save(backend, id="del", created_at=t0 - 1, next_run_at=t0)
    sched = await leader(app)
    await sched.reload(backend)
    await backend.delete_schedule("del")
    await sched.reload(backend)
    assert await sched.fire_due(t0 + 5) == 0


async def test_loop_fires_on_time_and_applies_edits(app: Conveyor) -> None:
    backend = await app.backend()
    fired: list[tuple[float, float]] = []
    sched = Scheduler(
        app, poll=0.2, on_fire=lambda _id, at, job, _c: fired.append((at, job.created_at))
    )
    now = await backend.now()
    await save(backend, interval=0.2, created_at=now, next_run_at=now + 0.2)
    task = asyncio.create_task(sched.run())
    try:
        await asyncio.sleep(1.05)
        assert 4 <= len(fired) <= 6
        lags = [created - at for at, created in fired]
        assert max(lags) < 0.05, lags  # woke at each due time, not on a coarse poll
        # Pause it over the store: the leader stops within the poll interval.
        paused = await backend.get_schedule("s")
        assert paused is not None
        paused.enabled = False
        await backend.save_schedule(paused)
        await asyncio.sleep(0.3)
        count = len(fired)
        await asyncio.sleep(0.5)
        assert len(fired) == count
    finally:
        sched.stop()
        await asyncio.wait_for(task, 5)
    # Stopping hands the lock over at once.
    assert await backend.acquire_lock(LOCK_NAME, "next", 1.0) is not None


async def test_standby_takes_over_when_the_leader_stops(app: Conveyor) -> None:
    backend = await app.backend()
    now = await backend.now()
    await save(backend, interval=0.2, created_at=now, next_run_at=now + 0.2)
    fired: list[tuple[str, float]] = []
    a = Scheduler(app, owner="a", on_fire=lambda i, at, _j, c: fired.append(("a", at)))
    b = Scheduler(app, owner="b", on_fire=lambda i, at, _j, c: fired.append(("b", at)))
    task_a = asyncio.create_task(a.run())
    await asyncio.sleep(0.3)
    task_b = asyncio.create_task(b.run())
    try:
        await asyncio.sleep(0.5)
        assert a.is_leader
        assert not b.is_leader
        a.stop()
        await asyncio.wait_for(task_a, 5)
        await asyncio.sleep(0.8)  # b retries the lock every lease/3 (±20%)
        assert b.is_leader
    finally:
        b.stop()
        await asyncio.wait_for(task_b, 5)
    times = [at for _, at in fired]
    assert len(times) == len(set(times))  # no fire twice
    assert {"a", "b"} == {who for who, _ in fired}
    gaps = [y - x for x, y in zip(sorted(times), sorted(times)[1:], strict=False)]
    assert max(gaps) < 0.25  # the handover caught up every fire time


async def test_declared_schedules_are_stored_once_and_kept_when_unchanged(
    make_app: Callable[..., Conveyor],
) -> None:
    app = make_app(lease_seconds=1.0)

    @app.cron("*/5 * * * * *")
    async def beat() -> None: ...

    backend = await app.backend()
    for _ in range(2):
        sched = Scheduler(app)
        task = asyncio.create_task(sched.run())
        await asyncio.sleep(0.05)
        sched.stop()
        await asyncio.wait_for(task, 5)
        if _ == 0:
            version = await backend.schedules_version()
    assert await backend.schedules_version() == version  # the second start wrote nothing
    stored = await backend.get_schedule("beat")
    assert stored is not None
    assert stored.source == "code"
    assert stored.next_run_at is not None
    # Paused over the API, a declared schedule stays paused when code is redeployed.
    stored.enabled = False
    await backend.save_schedule(stored)
    app.schedules["beat"].jitter = 1.0  # the code changed
    sched = Scheduler(app)
    task = asyncio.create_task(sched.run())
    await asyncio.sleep(0.05)
    sched.stop()
    await asyncio.wait_for(task, 5)
    again = await backend.get_schedule("beat")
    assert again is not None
    assert again.jitter == 1.0
    assert not again.enabled
    assert again.created_at == stored.created_at
