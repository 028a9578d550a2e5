"""Delayed jobs and ``wait_for_work``, used the way an idle worker uses them."""

from __future__ import annotations

import asyncio
import time

import pytest

from conveyor.backends.base import Backend
from conveyor.job import Job
from tests.contract.helpers import enqueue, make_job

pytestmark = pytest.mark.timeout(30)


async def idle_worker(backend: Backend, deadline: float) -> list[Job]:
    """Fetch, and wait for work between empty fetches, until something arrives."""
    while time.monotonic() < deadline:
        jobs = await backend.fetch(["default"], "w", 10, 30)
        if jobs:
            return jobs
        await backend.wait_for_work(["default"], timeout=5.0)
    return []


async def test_delayed_job_is_invisible_then_starts_on_time(backend: Backend) -> None:
    run_at = await backend.now() + 0.3
    job = make_job(run_at=run_at)
    await enqueue(backend, job)
    assert await backend.fetch(["default"], "w", 10, 30) == []
    (record,) = await idle_worker(backend, time.monotonic() + 5)
    started = await backend.now()
    assert record.id == job.id
    assert run_at <= started < run_at + 0.05


async def test_a_delayed_job_enqueued_during_a_wait_starts_on_time(backend: Backend) -> None:
    worker = asyncio.create_task(idle_worker(backend, time.monotonic() + 5))
    await asyncio.sleep(0.1)  # the worker is waiting, with nothing due
    run_at = await backend.now() + 0.3
    await enqueue(backend, make_job(run_at=run_at))
    (record,) = await worker
    started = await backend.now()
    assert record.run_at == run_at
    assert run_at <= started < run_at + 0.05


async def test_enqueue_wakes_an_idle_worker(backend: Backend) -> None:
    worker = asyncio.create_task(idle_worker(backend, time.monotonic() + 5))
    await asyncio.sleep(0.1)  # the worker is waiting now
    job = make_job()
    enqueued_at = time.monotonic()
    await enqueue(backend, job)
    (record,) = await worker
    assert record.id == job.id
    assert time.monotonic() - enqueued_at < 0.1


async def test_wait_returns_at_once_when_work_is_ready(backend: Backend) -> None:
    await enqueue(backend, make_job())
    started = time.monotonic()
    await backend.wait_for_work(["default"], timeout=2)
    assert time.monotonic() - started < 0.1


async def test_wait_times_out_when_idle(backend: Backend) -> None:
    await enqueue(backend, make_job(queue="elsewhere"))
    started = time.monotonic()
    await backend.wait_for_work(["default"], timeout=0.2)
    assert 0.15 <= time.monotonic() - started < 1.0


async def test_wait_wakes_when_a_lease_expires(backend: Backend) -> None:
    await enqueue(backend, make_job())
    (leased,) = await backend.fetch(["default"], "dead", 1, 0.2)
    started = time.monotonic()
    await backend.wait_for_work(["default"], timeout=5)
    assert 0.1 <= time.monotonic() - started < 0.5
    (again,) = await backend.fetch(["default"], "w", 1, 30)
    assert again.id == leased.id
    assert again.attempts == 2
