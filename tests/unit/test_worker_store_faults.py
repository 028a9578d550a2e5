"""The worker when the store will not take outcomes: refused for good, a bug in the store
layer, unavailable for a while, or down at shutdown (in-memory store, faults injected)."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, cast

import pytest

from conveyor import Conveyor, JobStatus
from conveyor.backends.base import Backend, Outcome, OutcomeKind
from conveyor.errors import BackendError, BackendUnavailableError, OutcomeStoreError
from conveyor.job import Job
from conveyor.worker import Worker
from conveyor.worker.completer import Completer
from conveyor.worker.worker import SHUTDOWN_SLACK
from tests.conftest import running

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def app(make_app: Callable[..., Conveyor]) -> Conveyor:
    return make_app()


async def _store_class(app: Conveyor) -> type[Any]:
    return type(await app.backend())


async def _start_with_complete_raising(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch, error: Exception
) -> tuple[Worker, asyncio.Task[None]]:
    """A worker running on a store whose ``complete`` raises ``error``."""

    async def complete(self: object, outcomes: Sequence[Outcome]) -> list[bool]:
        raise error

    monkeypatch.setattr(await _store_class(app), "complete", complete)
    worker = Worker(app, concurrency=4, lease_seconds=0.5)
    return worker, asyncio.create_task(worker.run())


async def _handed_out(app: Conveyor, count: int) -> list[Job]:
    """Fetch as another worker until ``count`` jobs come (their leases must expire)."""
    backend = await app.backend()
    taken: list[Job] = []
    async with asyncio.timeout(10):
        while len(taken) < count:
            taken += await backend.fetch(["default"], "next-worker", count, 30.0)
            await asyncio.sleep(0.05)
    return taken


async def test_an_outcome_refused_for_good_fails_its_job_and_holds_no_other_back() -> None:
    # The store cannot take one outcome (say its result is too large): every batch that
    # carries it is refused. The others in the batch must still be stored, and the
    # refused one replaced by a failure, not retried forever.
    stored: list[Outcome] = []
    calls = 0

    class Store:
        async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
            nonlocal calls
            calls += 1
            if any(o.job_id == "big" and o.kind is OutcomeKind.COMPLETED for o in outcomes):
                raise BackendError("value too large")
            stored.extend(outcomes)
            return [True] * len(outcomes)

    completer = Completer(cast(Backend, Store()))
    completer.start()
    outcomes = [
        Outcome(job_id, "w", 1, OutcomeKind.COMPLETED, result=job_id)
        for job_id in ("a", "big", "c")
    ]
    answers = await asyncio.wait_for(
        asyncio.gather(*(completer.submit(o) for o in outcomes)), timeout=5
    )
    await completer.aclose()
    assert answers == [True, True, True]
    assert [(o.job_id, o.kind) for o in stored] == [
        ("a", OutcomeKind.COMPLETED),
        ("big", OutcomeKind.FAILED),
        ("c", OutcomeKind.COMPLETED),
    ]
    error = stored[1].error
    assert error is not None
    assert error["details"]["reason"] == "outcome_not_stored"
    assert "value too large" in error["message"]
    assert calls == 5  # the batch, then a, big, big's failure, c: no endless retry
    assert completer.stats.unstorable == 1


async def test_a_store_that_refuses_every_outcome_stops_the_worker_and_frees_its_jobs(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Refused for good, even the failure that replaces the outcome: the store can take
    # nothing, so the worker stops and its running jobs go to other workers.
    slow_started = asyncio.Event()

    @app.task()
    async def quick() -> int:
        return 1

    @app.task()
    async def slow() -> int:
        slow_started.set()
        await asyncio.sleep(30)
        return 2

    refusal = BackendError("schema mismatch")
    worker, run = await _start_with_complete_raising(app, monkeypatch, refusal)
    long_job = await slow.enqueue()
    await asyncio.wait_for(slow_started.wait(), 5)
    short_job = await quick.enqueue()
    with pytest.raises(OutcomeStoreError) as caught:
        await asyncio.wait_for(run, 10)
    assert isinstance(caught.value.__cause__, BackendError)
    assert worker.stats.outcomes.abandoned >= 1
    # Nothing renews the leases any more: both jobs go to the next worker that asks.
    taken = await _handed_out(app, 2)
    assert {j.id for j in taken} == {long_job.id, short_job.id}


async def test_a_bug_in_the_store_layer_stops_the_worker_loudly(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    @app.task()
    async def job() -> int:
        return 1

    bug = RuntimeError("bug in complete")
    worker, run = await _start_with_complete_raising(app, monkeypatch, bug)
    handle = await job.enqueue()
    with pytest.raises(OutcomeStoreError, match="bug in complete"):
        await asyncio.wait_for(run, 10)
    logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
    assert logged, "the error was not logged with its traceback"
    assert isinstance(logged[0].exc_info[1], RuntimeError)  # type: ignore[index]
    assert worker.stats.outcomes.abandoned == 1
    # Its lease is not renewed any more: the job is handed out again once it expires.
    (again,) = await _handed_out(app, 1)
    assert (again.id, again.attempts) == (handle.id, 2)


class _Outage:
    """Store calls that fail (``hang=False``) or never answer while ``on`` is set; they
    stop hanging once ``over`` is set (the heartbeat thread waits in one, too)."""

    def __init__(self, hang: bool) -> None:
        self.hang = hang
        self.on = threading.Event()
        self.over = threading.Event()
        self.failures = 0

    def wrap(self, method: Callable[..., Any]) -> Callable[..., Any]:
        async def call(*args: Any, **kwargs: Any) -> Any:
            if self.on.is_set():
                self.failures += 1
                while self.hang and not self.over.is_set():
                    await asyncio.sleep(0.01)
                raise BackendUnavailableError("store down")
            return await method(*args, **kwargs)

        return call


@pytest.mark.parametrize("hang", [False, True], ids=["refusing", "hanging"])
async def test_a_stop_with_the_store_down_ends_within_the_grace_period_and_slack(
    app: Conveyor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    hang: bool,
) -> None:
    outage = _Outage(hang)
    finished = asyncio.Event()

    @app.task()
    async def job() -> int:
        outage.on.set()  # the store goes down while the job runs
        finished.set()
        return 1

    store = await _store_class(app)
    for name in ("complete", "fetch", "wait_for_work", "renew", "unregister_worker"):
        monkeypatch.setattr(store, name, outage.wrap(getattr(store, name)))
    grace = 0.5
    worker = Worker(app, concurrency=2, shutdown_grace=grace)
    run = asyncio.create_task(worker.run())
    try:
        await job.enqueue()
        await asyncio.wait_for(finished.wait(), 5)
        worker.stop()
        stopped = time.monotonic()
        await asyncio.wait_for(run, grace + SHUTDOWN_SLACK + 5)
        took = time.monotonic() - stopped
    finally:
        outage.over.set()
    assert took <= grace + SHUTDOWN_SLACK + 1.0
    assert worker.stats.outcomes.abandoned == 1
    assert "1 outcomes could not be stored before shutdown" in caplog.text


async def test_outcomes_wait_out_an_outage_and_land_when_the_store_returns(
    app: Conveyor, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    outage = _Outage(hang=False)
    three_failed = asyncio.Event()

    @app.task()
    async def job() -> int:
        outage.on.set()
        return 7

    store = await _store_class(app)
    complete = outage.wrap(store.complete)

    async def counted(*args: Any) -> Any:
        try:
            return await complete(*args)
        finally:
            if outage.failures >= 3:
                three_failed.set()

    monkeypatch.setattr(store, "complete", counted)
    caplog.set_level(logging.WARNING, logger="conveyor.worker.completer")
    async with running(Worker(app, concurrency=2)) as worker:
        handle = await job.enqueue()
        await asyncio.wait_for(three_failed.wait(), 10)
        outage.on.clear()
        assert await handle.result(timeout=10) == 7
    info = await handle.info()
    assert (info.status, info.attempts) == (JobStatus.COMPLETED, 1)
    assert worker.stats.outcomes.store_failures >= 3
    assert worker.stats.outcomes.abandoned == 0
    # One warning when the outage starts (then at most one every 10 s), one at its end.
    assert caplog.text.count("storing outcomes failed (store down)") == 1
    assert "storing outcomes works again after" in caplog.text
