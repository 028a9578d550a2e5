"""Redis at its memory limit (``maxmemory`` with ``noeviction``): new work is refused
with 503, and everything that drains the queue or frees memory still runs, so the store
recovers without raising ``maxmemory``."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from conveyor import Conveyor, JobStatus, Settings
from conveyor.api import create_app
from conveyor.backends.base import Backend
from conveyor.backends.redis import RedisBackend
from conveyor.errors import BackendUnavailableError
from conveyor.job import Job, JobHandle
from conveyor.task import Task
from conveyor.worker import Worker
from tests.conftest import running
from tests.integration.helpers import until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(120)

#: Bytes of ``maxmemory`` above what the server holds when the fill starts.
HEADROOM = 1_500_000
#: Bytes the store holds over ``maxmemory`` while the test checks what still works: more
#: than client buffers (each the size of a filler batch, at most) give back when idle.
MARGIN = 300_000
RESULT = "r" * 2_000
LEASE = 1.0
SUBMIT = {"type": "fill", "parameters": {"blob": "y"}}


@pytest.fixture
async def server(tmp_path: Path) -> AsyncIterator[RedisServer]:
    redis = RedisServer(tmp_path / "redis", "--maxmemory-policy", "noeviction").start()
    try:
        yield redis
    finally:
        redis.stop()


async def _fill(fill: Task[[str], None]) -> tuple[list[str], BackendUnavailableError]:
    """Enqueue filler jobs until the store refuses them; their ids and the refusal."""
    ids: list[str] = []
    for _ in range(500):
        try:
            handles = await fill.enqueue_many([(("x" * 5_000,), {})] * 10)
        except BackendUnavailableError as refused:
            return ids, refused
        ids += [h.id for h in handles]
    raise AssertionError("the store never refused a submit")


async def _job(backend: Backend, job_id: str) -> Job:
    job = await backend.get_job(job_id)
    assert job is not None
    return job


async def _running(backend: Backend, held: list[JobHandle[str]]) -> list[Job]:
    jobs = [await _job(backend, h.id) for h in held]
    return [job for job in jobs if job.status == JobStatus.RUNNING]


async def _check_leases_and_heartbeats(backend: Backend, worker: Worker, job: Job) -> None:
    """The worker's heartbeat renews ``job``'s lease and its registration."""
    assert job.lease_expires_at is not None
    first_deadline = job.lease_expires_at
    seen = {w.id: w.last_heartbeat for w in await backend.list_workers()}[worker.id]

    async def renewed() -> bool:
        now = await _job(backend, job.id)
        assert now.attempts == 1, now  # never reclaimed: its lease held throughout
        return (now.lease_expires_at or 0.0) > first_deadline + LEASE

    async def beat() -> bool:
        workers = {w.id: w.last_heartbeat for w in await backend.list_workers()}
        return workers.get(worker.id, 0.0) > seen

    await until(renewed, "a lease renewed past its first deadline")
    await until(beat, "a fresh worker heartbeat")


async def _recover(backend: Backend, url: str, fillers: list[str], result_ttl: float) -> int:
    """Cancel the filler jobs, then purge as the store will once a retention has passed
    (its clock moved on by one); the number of records purged."""
    for job_id in fillers:
        await backend.cancel(job_id)
    purging = RedisBackend(url, clock=lambda: time.time() + result_ttl + 1)
    await purging.open()
    try:
        return await purging.purge()
    finally:
        await purging.aclose()


async def test_a_store_at_its_memory_limit_refuses_work_and_drains(server: RedisServer) -> None:
    raw = Redis(port=server.port)
    app = Conveyor(settings=Settings(url=server.url, lease_seconds=LEASE, allowed_hosts=("t",)))
    gate = asyncio.Event()

    @app.task(queue="work")
    async def hold(n: int) -> str:
        await gate.wait()
        return RESULT

    @app.task(queue="fill")
    async def fill(blob: str) -> None:
        return None

    transport = httpx.ASGITransport(app=create_app(app))
    client = httpx.AsyncClient(transport=transport, base_url="http://t")
    try:
        backend = await app.backend()
        held = await hold.enqueue_many([((n,), {}) for n in range(8)])
        worker = Worker(
            app, queues=["work"], concurrency=4, lease_seconds=LEASE, shutdown_grace=2.0
        )
        async with running(worker):
            try:

                async def four() -> bool:
                    return len(await _running(backend, held)) == 4

                await until(four, "four jobs running")
                used = int((await raw.info("memory"))["used_memory"])
                await raw.config_set("maxmemory", used + HEADROOM)
                fillers, refused = await _fill(fill)
                assert "maxmemory" in str(refused)
                # Redis refuses a command whose arguments would cross the limit, so the
                # fill stops short of it, and anything freed (a drained stream entry, an
                # idle client's buffer) would end the premise: the limit goes a little
                # below what the server holds, as when drains have grown memory past it.
                used = int((await raw.info("memory"))["used_memory"])
                await raw.config_set("maxmemory", used - MARGIN)
                answer = await client.post("/api/v1/jobs", json=SUBMIT)
                assert answer.status_code == 503, answer.text
                error = answer.json()["error"]
                assert error["code"] == "UNAVAILABLE"
                assert "maxmemory" in error["details"]["reason"]

                # At the limit: leases are renewed, the worker stays registered...
                one = (await _running(backend, held))[0]
                await _check_leases_and_heartbeats(backend, worker, one)
                # ... a cancel works ...
                answer = await client.delete(f"/api/v1/jobs/{fillers[0]}")
                assert answer.status_code == 200, answer.text
                assert answer.json()["status"] == "cancelled"
                # ... and outcomes are stored, the jobs still waiting leased and run.
                gate.set()
                assert [await h.result(timeout=20) for h in held] == [RESULT] * 8
                answer = await client.post("/api/v1/jobs", json=SUBMIT)
                assert answer.status_code == 503, "no longer at the limit: this proved nothing"
            except BaseException:
                # Lift the limit: a worker that cannot store its outcomes never stops.
                await raw.config_set("maxmemory", 0)
                raise
            finally:
                gate.set()

        maxmemory = (await raw.config_get("maxmemory"))["maxmemory"]
        purged = await _recover(backend, server.url, fillers[1:], app.settings.result_ttl_seconds)
        assert purged == len(fillers) + len(held)
        answer = await client.post("/api/v1/jobs", json=SUBMIT)
        assert answer.status_code == 202, answer.text
        assert (await raw.config_get("maxmemory"))["maxmemory"] == maxmemory
        print(
            f"\n[oom] maxmemory {used - MARGIN} B; submits refused after {len(fillers)} "
            f"filler jobs; {len(held)} jobs leased, renewed and completed at the limit"
        )
    finally:
        await client.aclose()
        await app.aclose()
        await raw.aclose()
