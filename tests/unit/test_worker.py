"""The worker against the in-memory store: execution modes, retries, leases, shutdown."""

from __future__ import annotations

import asyncio
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import pytest

from conveyor import Conveyor, JobStatus, current_job
from conveyor.backends.base import Backend, Outcome, OutcomeKind
from conveyor.errors import BackendUnavailableError, JobFailedError, NonRetryableError, Retry
from conveyor.loader import load_app
from conveyor.worker import Worker
from conveyor.worker.completer import Completer
from tests.conftest import running

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return make_app()


async def test_runs_async_jobs_and_stores_results(app: Conveyor) -> None:
    @app.task()
    async def add(x: int, y: int) -> int:
        return x + y

    async with running(Worker(app, concurrency=10)):
        handles = await add.enqueue_many([((i, i), {}) for i in range(50)])
        results = [await h.result(timeout=10) for h in handles]
    assert results == [2 * i for i in range(50)]
    info = await handles[0].info()
    assert info.status is JobStatus.COMPLETED
    assert info.attempts == 1
    assert info.progress == 100


async def test_never_runs_more_than_concurrency(app: Conveyor) -> None:
    active = 0
    peak = 0

    @app.task()
    async def work() -> None:
        nonlocal active, peak
        active += 1
        peak = max(peak, active)
        await asyncio.sleep(0.01)
        active -= 1

    async with running(Worker(app, concurrency=4)):
        handles = await work.enqueue_many([((), {})] * 40)
        for h in handles:
            await h.result(timeout=10)
    assert peak == 4


async def test_retries_with_backoff_then_fails(app: Conveyor) -> None:
    calls: list[float] = []

    @app.task(retries=2, backoff=0.05, backoff_max=0.05)
    async def flaky() -> None:
        calls.append(time.monotonic())
        raise ValueError("broken")

    async with running(Worker(app)):
        handle = await flaky.enqueue()
        with pytest.raises(JobFailedError) as caught:
            await handle.result(timeout=10)
    assert len(calls) == 3
    job = await handle.info()
    assert job.status is JobStatus.FAILED
    assert job.attempts == 3
    assert caught.value.error == {
        "code": "TASK_FAILED",
        "message": "broken",
        "details": {
            "reason": "retries_exhausted",
            "retryable": False,
            "exceptionType": "builtins.ValueError",
        },
    }


async def test_non_retryable_errors_fail_at_once(app: Conveyor) -> None:
    class Invalid(Exception):
        pass

    @app.task(retries=5, non_retryable=[Invalid])
    async def declared() -> None:
        raise Invalid("bad input")

    @app.task(retries=5)
    async def signalled() -> None:
        raise NonRetryableError("cannot work")

    async with running(Worker(app)):
        first = await declared.enqueue()
        second = await signalled.enqueue()
        for handle in (first, second):
            with pytest.raises(JobFailedError):
                await handle.result(timeout=10)
    assert (await first.info()).attempts == 1
    assert (await second.info()).attempts == 1


async def test_retry_signal_reruns_after_its_delay(app: Conveyor) -> None:
    seen: list[float] = []

    @app.task(retries=3)
    async def again() -> int:
        seen.append(time.monotonic())
        if len(seen) == 1:
            raise Retry(delay=0.2)
        return len(seen)

    async with running(Worker(app)):
        assert await (await again.enqueue()).result(timeout=10) == 2
    assert seen[1] - seen[0] >= 0.19


async def test_async_timeout_cancels_the_task(app: Conveyor) -> None:
    cancelled = asyncio.Event()

    @app.task(timeout=0.1, retries=0)
    async def slow() -> None:
        try:
            await asyncio.sleep(10)
        except asyncio.CancelledError:
            cancelled.set()
            raise

    async with running(Worker(app)):
        handle = await slow.enqueue()
        with pytest.raises(JobFailedError) as caught:
            await handle.result(timeout=10)
    assert cancelled.is_set()
    assert caught.value.error is not None
    assert caught.value.error["details"]["reason"].startswith("timeout")


async def test_thread_tasks_run_off_the_loop_and_report_progress(app: Conveyor) -> None:
    threads: list[str] = []

    @app.task(mode="thread")
    def blocking(x: int) -> int:
        threads.append(threading.current_thread().name)
        current_job().set_progress_nowait(50)
        time.sleep(0.2)
        return x * 2

    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            await asyncio.sleep(0.01)
            ticks += 1

    tick_task = asyncio.create_task(ticker())
    async with running(Worker(app)):
        handle = await blocking.enqueue(21)
        assert await handle.result(timeout=10) == 42
    tick_task.cancel()
    assert threads
    assert threads[0] != threading.main_thread().name
    assert ticks >= 10  # the loop kept running while the thread slept
    backend = await app.backend()
    events = [e for e in await backend.read_events(None, 1000) if e.job_id == handle.id]
    assert [e.type for e in events] == [
        "job_created",
        "job_started",
        "job_progress",
        "job_completed",
    ]


async def test_progress_is_recorded_and_published(app: Conveyor) -> None:
    proceed = asyncio.Event()

    @app.task()
    async def steps() -> str:
        await current_job().set_progress(40)
        await proceed.wait()
        return "done"

    async with running(Worker(app)):
        handle = await steps.enqueue()
        while (await handle.info()).progress != 40:
            await asyncio.sleep(0.01)
        proceed.set()
        assert await handle.result(timeout=10) == "done"


async def test_cancelling_a_running_job_stops_it(app: Conveyor) -> None:
    started = asyncio.Event()
    stopped = asyncio.Event()

    @app.task()
    async def forever() -> None:
        started.set()
        try:
            await asyncio.sleep(60)
        finally:
            stopped.set()

    async with running(Worker(app, lease_seconds=1.5)) as worker:
        handle = await forever.enqueue()
        await asyncio.wait_for(started.wait(), 5)
        job = await handle.cancel()
        assert job.status is JobStatus.CANCELLED
        await asyncio.wait_for(stopped.wait(), 5)
        while worker.in_flight:
            await asyncio.sleep(0.01)
    assert (await handle.info()).status is JobStatus.CANCELLED


async def test_unknown_task_type_fails_clearly(
    app: Conveyor, make_app: Callable[..., Conveyor]
) -> None:
    @app.task()
    async def known() -> None:
        return None

    handle = await known.enqueue()
    # A worker for the same store that does not know the task (another deployment).
    other = Conveyor(settings=app.settings)
    other._shared = await app.backend()
    async with running(Worker(other)):
        with pytest.raises(JobFailedError) as caught:
            await handle.result(timeout=10)
    assert caught.value.error is not None
    assert caught.value.error["details"]["reason"] == "unknown_task"


async def test_results_that_are_not_json_fail_the_job(app: Conveyor) -> None:
    @app.task(retries=3)
    async def odd() -> object:
        return object()

    async with running(Worker(app)):
        handle = await odd.enqueue()
        with pytest.raises(JobFailedError) as caught:
            await handle.result(timeout=10)
    assert caught.value.error is not None
    assert caught.value.error["details"]["reason"] == "serialization"
    assert (await handle.info()).attempts == 1


async def test_heartbeat_keeps_a_long_job_from_being_handed_out_twice(app: Conveyor) -> None:
    runs: list[str] = []

    @app.task()
    async def long() -> None:
        runs.append("start")
        await asyncio.sleep(1.5)

    first = Worker(app, lease_seconds=0.3, worker_id="first")
    second = Worker(app, lease_seconds=0.3, worker_id="second")
    async with running(first), running(second):
        handle = await long.enqueue()
        await handle.result(timeout=10)
    assert runs == ["start"]
    assert (await handle.info()).attempts == 1


async def test_heartbeat_survives_a_blocked_event_loop(app: Conveyor) -> None:
    runs = 0

    @app.task()
    async def hog() -> None:
        nonlocal runs
        runs += 1
        time.sleep(1.2)  # blocks the loop: the mistake this guards against

    backend = await app.backend()
    async with running(Worker(app, lease_seconds=0.4, worker_id="hog")):
        handle = await hog.enqueue()
        await handle.result(timeout=10)
        # Another worker's claim right after: nothing may be up for grabs.
        assert await backend.fetch(["default"], "other", 10, 1.0) == []
    assert runs == 1
    assert (await handle.info()).attempts == 1


async def test_job_of_a_dead_worker_runs_again_after_its_lease(app: Conveyor) -> None:
    @app.task()
    async def job() -> str:
        return "ok"

    handle = await job.enqueue()
    backend = await app.backend()
    (claimed,) = await backend.fetch(["default"], "dead-worker", 1, 0.3)
    assert claimed.id == handle.id
    started = time.monotonic()
    async with running(Worker(app)):
        assert await handle.result(timeout=10) == "ok"
    assert time.monotonic() - started >= 0.25
    info = await handle.info()
    assert info.attempts == 2


async def test_graceful_stop_finishes_short_jobs_and_releases_long_ones(app: Conveyor) -> None:
    started = 0
    all_started = asyncio.Event()

    @app.task()
    async def short() -> str:
        nonlocal started
        started += 1
        if started == 2:
            all_started.set()
        await asyncio.sleep(0.2)
        return "short"

    @app.task()
    async def long() -> str:
        nonlocal started
        started += 1
        if started == 2:
            all_started.set()
        await asyncio.sleep(30)
        return "long"

    worker = Worker(app, shutdown_grace=0.6)
    task = asyncio.create_task(worker.run())
    quick = await short.enqueue()
    slow = await long.enqueue()
    await asyncio.wait_for(all_started.wait(), 5)
    worker.stop()
    await asyncio.wait_for(task, 10)
    assert (await quick.info()).status is JobStatus.COMPLETED
    released = await slow.info()
    assert released.status is JobStatus.PENDING
    assert released.attempts == 0  # a shutdown does not spend the retry budget
    assert worker.stats.released == 1


async def test_process_tasks_run_in_a_child(tmp_path: Path) -> None:
    spec = f"{Path(__file__).parent / 'proc_tasks.py'}:app"
    app = load_app(spec)
    square = app.get_task("square")
    sleepy = app.get_task("sleepy")
    refuse = app.get_task("refuse")
    die = app.get_task("die")
    marker = tmp_path / "pid"
    async with running(Worker(app, processes=2)):
        result = await (await square.enqueue(7)).result(timeout=60)
        assert result["value"] == 49
        assert result["pid"] != os.getpid()

        timed = await sleepy.enqueue(30, str(marker))
        with pytest.raises(JobFailedError) as caught:
            await timed.result(timeout=60)
        assert caught.value.error is not None
        assert caught.value.error["details"]["reason"].startswith("timeout")
        child = int(marker.read_text())
        for _ in range(100):  # the timed-out child is killed, not left running
            try:
                os.kill(child, 0)
            except ProcessLookupError:
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("timed-out child process still alive")

        refused = await refuse.enqueue()
        with pytest.raises(JobFailedError) as caught:
            await refused.result(timeout=60)
        assert caught.value.error is not None
        assert caught.value.error["details"]["exceptionType"] == "conveyor.errors.NonRetryableError"

        died = await die.enqueue()
        with pytest.raises(JobFailedError) as caught:
            await died.result(timeout=60)
        assert caught.value.error is not None
        assert caught.value.error["details"]["reason"].startswith("process_died")


async def test_a_job_leased_again_while_its_last_outcome_waits_keeps_its_new_lease(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The store stalls: renewals fail and the first attempt's outcome waits, so the
    # lease runs out and this same worker leases the job again. When the old outcome is
    # finally refused, the new attempt must keep its lease (and not be stopped).
    starts: list[int] = []
    second_started = asyncio.Event()

    @app.task()
    async def job() -> None:
        attempt = current_job().attempt
        starts.append(attempt)
        if attempt == 2:
            second_started.set()
            await asyncio.sleep(1.5)  # five leases: only renewals keep it

    backend = await app.backend()
    store = type(backend)
    stalled = threading.Event()
    stalled.set()
    released = asyncio.Event()
    renew, complete = store.renew, store.complete

    async def stalled_renew(self: object, *args: object, **kwargs: object) -> set[str]:
        if stalled.is_set():
            raise OSError("store unavailable")
        return await renew(self, *args, **kwargs)  # type: ignore[arg-type]

    async def held_complete(self: object, outcomes: list[object]) -> list[bool]:
        if any(getattr(o, "attempt", 0) == 1 for o in outcomes):
            await released.wait()
        return await complete(self, outcomes)  # type: ignore[arg-type]

    monkeypatch.setattr(store, "renew", stalled_renew)
    monkeypatch.setattr(store, "complete", held_complete)
    async with running(Worker(app, concurrency=4, lease_seconds=0.3)):
        handle = await job.enqueue()
        await asyncio.wait_for(second_started.wait(), 10)
        stalled.clear()
        released.set()
        await handle.result(timeout=10)
    assert starts == [1, 2]
    assert (await handle.info()).attempts == 2


async def test_a_job_stored_as_completed_before_a_renewal_is_not_stopped_as_lost(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # The outcome is stored, and a renewal that still lists the job hears "not yours"
    # before the worker has taken the answer in: the job completed normally, nothing is
    # stopped and nothing says it was cancelled or lost.
    @app.task()
    async def quick() -> int:
        return 7

    backend = await app.backend()
    store = type(backend)
    renew, complete = store.renew, store.complete
    renewed_after_store = asyncio.Event()
    stored = threading.Event()
    lost_seen: list[set[str]] = []

    async def watching_renew(self: object, *args: object, **kwargs: object) -> set[str]:
        lost: set[str] = await renew(self, *args, **kwargs)  # type: ignore[arg-type]
        if stored.is_set() and lost:
            lost_seen.append(lost)
        return lost

    told = asyncio.Event()
    on_lost = Worker._on_lost

    def telling_on_lost(self: Worker, attempts: dict[str, int]) -> None:
        on_lost(self, attempts)
        if stored.is_set():
            told.set()

    async def complete_then_wait(self: object, outcomes: list[object]) -> list[bool]:
        flags: list[bool] = await complete(self, outcomes)  # type: ignore[arg-type]
        stored.set()
        # A heartbeat renews the stored job, hears "not yours", and tells the worker,
        # all before the worker hears that the outcome is stored.
        await asyncio.wait_for(told.wait(), 5)
        renewed_after_store.set()
        return flags

    monkeypatch.setattr(store, "renew", watching_renew)
    monkeypatch.setattr(store, "complete", complete_then_wait)
    monkeypatch.setattr(Worker, "_on_lost", telling_on_lost)
    caplog.set_level(logging.INFO, "conveyor.worker")
    worker = Worker(app, concurrency=4, lease_seconds=0.3)
    async with running(worker):
        handle = await quick.enqueue()
        assert await handle.result(timeout=10) == 7
        await asyncio.wait_for(renewed_after_store.wait(), 10)
    assert lost_seen
    assert "stopping job" not in caplog.text
    assert worker.stats.completed == 1
    assert worker.stats.stale_acks == 0


@pytest.mark.parametrize("taken_meanwhile", [True, False])
async def test_a_fetch_answered_after_its_leases_ran_out_starts_only_what_is_still_ours(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch, taken_meanwhile: bool
) -> None:
    # The store granted the lease, then froze before answering: by the time the answer
    # arrives the lease has run out, and another worker may hold the job already.
    starts: list[str] = []

    @app.task()
    async def job() -> None:
        starts.append(current_job().id)

    backend = await app.backend()
    store = type(backend)
    fetch = store.fetch
    thief: list[str] = []

    async def late_fetch(self: object, *args: object, **kwargs: object) -> list[object]:
        got = await fetch(self, *args, **kwargs)  # type: ignore[arg-type]
        if got:
            await asyncio.sleep(0.4)  # the answer is late: the 0.3 s lease ran out
            monkeypatch.setattr(store, "fetch", fetch)  # once
            if taken_meanwhile:
                stolen = await fetch(self, ["default"], "other", 10, 30.0)  # type: ignore[arg-type]
                thief.extend(j.id for j in stolen)
        return got

    monkeypatch.setattr(store, "fetch", late_fetch)
    handle = await job.enqueue()
    async with running(Worker(app, concurrency=4, lease_seconds=0.3)):
        if taken_meanwhile:
            await asyncio.sleep(1.0)  # time for a wrong start to happen
        else:
            await handle.result(timeout=10)
    info = await handle.info()
    if taken_meanwhile:
        assert thief == [handle.id]
        assert starts == []
        assert (info.status, info.lease_owner) == (JobStatus.RUNNING, "other")
    else:
        assert starts == [handle.id]
        assert (info.status, info.attempts) == (JobStatus.COMPLETED, 1)


async def test_a_wait_for_work_that_fails_backs_off_and_work_goes_on(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # A store that answers fetches but whose wait fails (say a key of the wrong type
    # written by hand) must not be polled flat out: the wait backs off like a failed
    # fetch, says why, and jobs still run.
    @app.task()
    async def job() -> int:
        return 1

    backend = await app.backend()
    store = type(backend)
    waits: list[float] = []
    five_failed = asyncio.Event()

    async def failing_wait(self: object, queues: object, timeout: float) -> None:
        waits.append(time.monotonic())
        if len(waits) == 5:
            five_failed.set()
        raise BackendUnavailableError("store unreachable")

    monkeypatch.setattr(store, "wait_for_work", failing_wait)
    async with running(Worker(app, concurrency=4)):
        handle = await job.enqueue()
        assert await handle.result(timeout=10) == 1
        await asyncio.wait_for(five_failed.wait(), 10)
    # Backing off 0.05, 0.1, 0.2, 0.4 s: five failed waits span at least 0.75 s (a loop
    # without a pause would fail thousands of times in that while).
    assert waits[4] - waits[0] >= 0.7
    assert "fetch failed (store unreachable)" in caplog.text


async def test_an_outcome_whose_submitter_is_cancelled_is_stored_all_the_same() -> None:
    # A forced shutdown cancels attempts that wait for their outcome to be stored: the
    # outcome must still reach the store, or a finished job would run again.
    stored: list[list[Outcome]] = []
    release = asyncio.Event()

    class SlowStore:
        async def complete(self, outcomes: list[Outcome]) -> list[bool]:
            await release.wait()
            stored.append(list(outcomes))
            return [True] * len(outcomes)

    completer = Completer(cast(Backend, SlowStore()))
    completer.start()
    first = Outcome("a", "w", 1, OutcomeKind.COMPLETED, result=1)
    second = Outcome("b", "w", 1, OutcomeKind.COMPLETED, result=2)
    cancelled = asyncio.create_task(completer.submit(first))
    waiting = asyncio.create_task(completer.submit(second))
    await asyncio.sleep(0)  # both submitted: their outcomes are queued
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await cancelled
    release.set()
    assert await waiting is True
    await completer.aclose()
    assert [o.job_id for batch in stored for o in batch] == ["a", "b"]
