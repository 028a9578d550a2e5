"""Large results over HTTP: left out of ``job_completed`` events (SSE) and of job
listings, read in full from ``GET /api/v1/jobs/{id}``; on every store."""

from __future__ import annotations

import sqlite3
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conveyor import Conveyor
from conveyor.backends.base import Backend, JobFilter
from conveyor.backends.redis import RedisBackend
from conveyor.backends.sqlite import SQLiteBackend
from conveyor.job import JobHandle
from conveyor.results import INLINE_RESULT_MAX
from conveyor.worker import Worker
from tests.conftest import running

from .conftest import STORES, make_conveyor, make_store_url
from .test_events import serving, stream

pytestmark = pytest.mark.timeout(60)

JOBS = "/api/v1/jobs"
#: The size of a "large" result: over the inline limit, under the result limit.
LARGE = 200_000


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return make_store_url(request.param, tmp_path, request)


@pytest.fixture
async def conveyor(store_url: str) -> AsyncIterator[Conveyor]:
    """The API tests' app (whose ``client`` fixture serves it) on each store, with a task
    returning results of any size."""
    app = make_conveyor(store_url)

    @app.task()
    async def text(size: int) -> str:
        return "x" * size

    yield app
    await app.aclose()


async def submit_text(client: httpx.AsyncClient, size: int) -> str:
    response = await client.post(JOBS, json={"type": "text", "parameters": {"size": size}})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["jobId"]
    return job_id


async def feed_bytes(backend: Backend) -> int:
    """What the store's event feed holds, in bytes, as the store keeps it."""
    if isinstance(backend, SQLiteBackend):
        with sqlite3.connect(backend.path) as conn:
            (total,) = conn.execute("SELECT sum(length(data)) FROM events").fetchone()
        return int(total)
    if isinstance(backend, RedisBackend):
        entries = await backend.client.xrange(backend.keys("default").events)
        return sum(len(value) for _, fields in entries for value in fields.values())
    events = await backend.read_events(None, 10_000)
    return len(orjson.dumps([event.data for event in events]))


async def test_a_large_result_is_left_out_of_its_event_and_kept_once_in_the_job(
    conveyor: Conveyor,
) -> None:
    async with (
        serving(conveyor) as live,
        httpx.AsyncClient(base_url=live.base_url, timeout=10) as http,
        stream(http, {"type": "job_completed"}) as reader,
        running(Worker(conveyor, concurrency=2)),
    ):
        large = await submit_text(http, LARGE)
        small = await submit_text(http, 10)
        events = {e["jobId"]: e for e in await reader.events(2, timeout=10)}
        shown = (await http.get(f"{JOBS}/{large}")).json()
        caught_up = (await http.get("/api/v1/events", params={"limit": 100})).json()
    assert "result" not in events[large]
    assert events[large]["resultOmitted"] is True
    assert events[large]["resultBytes"] == LARGE + 2
    assert events[small]["result"] == "x" * 10
    assert "resultOmitted" not in events[small]
    assert shown["result"] == "x" * LARGE
    assert "resultOmitted" not in shown
    (stored,) = [
        e for e in caught_up["items"] if e["type"] == "job_completed" and e["jobId"] == large
    ]
    assert stored["resultOmitted"] is True
    # Stored once: in the record, not in the feed.
    assert await feed_bytes(live.backend) < 5_000


async def finish_all(conveyor: Conveyor, ids: list[str]) -> None:
    async with running(Worker(conveyor, concurrency=10)):
        for job_id in ids:
            await JobHandle(conveyor, job_id).result(timeout=20)


async def test_a_list_of_large_results_stays_small(
    conveyor: Conveyor, client: httpx.AsyncClient
) -> None:
    large = [await submit_text(client, LARGE) for _ in range(5)]
    small = [await submit_text(client, size) for size in (10, INLINE_RESULT_MAX - 2)]
    await finish_all(conveyor, large + small)

    response = await client.get(JOBS, params={"limit": 100})
    assert response.status_code == 200
    assert len(response.content) < 4 * INLINE_RESULT_MAX  # not 5 × 200 KB
    items = {item["jobId"]: item for item in response.json()["items"]}
    for job_id in large:
        assert "result" not in items[job_id]
        assert items[job_id]["resultOmitted"] is True
        assert items[job_id]["resultBytes"] == LARGE + 2
        assert items[job_id]["status"] == "completed"
    assert [items[job_id]["result"] for job_id in small] == [
        "x" * 10,
        "x" * (INLINE_RESULT_MAX - 2),
    ]
    assert all("resultOmitted" not in items[job_id] for job_id in small)
    shown = (await client.get(f"{JOBS}/{large[0]}")).json()
    assert shown["result"] == "x" * LARGE


@pytest.mark.parametrize("store_url", ["sqlite", "redis"], indirect=True)
async def test_listing_does_not_read_large_results_into_the_process(
    conveyor: Conveyor, client: httpx.AsyncClient
) -> None:
    huge = 1_000_000  # within the default result limit, far above buffers' noise
    ids = [await submit_text(client, huge) for _ in range(5)]
    await finish_all(conveyor, ids)
    backend = await conveyor.backend()
    tracemalloc.start()
    try:
        page = await backend.list_jobs(JobFilter(), limit=100)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < huge  # not one result was read, let alone five
    assert {job.omitted_result_bytes for job in page.items} == {huge + 2}


async def test_openapi_documents_left_out_results(client: httpx.AsyncClient) -> None:
    spec: dict[str, Any] = (await client.get("/openapi.json")).json()
    job = spec["components"]["schemas"]["JobOut"]["properties"]
    assert {"resultOmitted", "resultBytes"} <= set(job)
