"""Large results on every backend: kept once, in the record; left out of events and
listings (``conveyor.results``)."""

from __future__ import annotations

from typing import Any

import pytest

from conveyor.backends.base import Backend, Event, JobFilter
from conveyor.job import Job
from conveyor.results import INLINE_RESULT_MAX
from conveyor.serialization import dumps
from tests.contract.helpers import done, enqueue, make_job

pytestmark = pytest.mark.timeout(30)

#: 10 KiB of JSON: over the inline limit, far under the result limit.
LARGE = {"rows": ["x" * 100] * 100}


def sized(size: int) -> str:
    """A string whose JSON is ``size`` bytes."""
    return "x" * (size - 2)


async def run_to_completion(backend: Backend, results: list[Any]) -> list[Job]:
    """One job per result, fetched and completed with it in one batch."""
    jobs = [make_job(args=[n]) for n in range(len(results))]
    await enqueue(backend, *jobs)
    leased = {j.id: j for j in await backend.fetch(["default"], "w", len(jobs), 30)}
    outcomes = [done(leased[j.id], "w", result=r) for j, r in zip(jobs, results, strict=True)]
    assert all(await backend.complete(outcomes))
    return jobs


async def completions(backend: Backend) -> dict[str, Event]:
    return {e.job_id: e for e in await backend.read_events(None, 1000) if e.type == "job_completed"}


async def test_a_large_result_is_in_its_record_and_not_in_its_event(backend: Backend) -> None:
    (job,) = await run_to_completion(backend, [LARGE])
    event = (await completions(backend))[job.id]
    assert "result" not in event.data
    assert event.data["resultOmitted"] is True
    assert event.data["resultBytes"] == len(dumps(LARGE)) > INLINE_RESULT_MAX
    assert event.data["attempt"] == 1
    assert event.data["taskType"] == "task"
    record = await backend.get_job(job.id)
    assert record is not None
    assert record.result == LARGE
    assert record.omitted_result_bytes is None


async def test_results_up_to_the_inline_limit_are_in_events_and_listings(
    backend: Backend,
) -> None:
    at_limit, over = sized(INLINE_RESULT_MAX), sized(INLINE_RESULT_MAX + 1)
    small, large = await run_to_completion(backend, [at_limit, over])
    events = await completions(backend)
    assert events[small.id].data["result"] == at_limit
    assert "resultOmitted" not in events[small.id].data
    assert events[large.id].data["resultBytes"] == INLINE_RESULT_MAX + 1

    listed = {j.id: j for j in (await backend.list_jobs(JobFilter(), limit=10)).items}
    assert listed[small.id].result == at_limit
    assert listed[small.id].omitted_result_bytes is None
    assert listed[large.id].result is None
    assert listed[large.id].omitted_result_bytes == INLINE_RESULT_MAX + 1


async def test_listings_leave_large_results_out_and_get_job_has_them(backend: Backend) -> None:
    jobs = await run_to_completion(backend, [LARGE, 7, LARGE, None])
    pending = make_job()
    await enqueue(backend, pending)
    page = await backend.list_jobs(JobFilter(), limit=10)
    listed = {j.id: j for j in page.items}
    assert set(listed) == {*(j.id for j in jobs), pending.id}
    size = len(dumps(LARGE))
    assert [listed[j.id].omitted_result_bytes for j in jobs] == [size, None, size, None]
    assert [listed[j.id].result for j in jobs] == [None, 7, None, None]
    assert listed[pending.id].omitted_result_bytes is None
    for job in (jobs[0], jobs[2]):
        record = await backend.get_job(job.id)
        assert record is not None
        assert record.result == LARGE
