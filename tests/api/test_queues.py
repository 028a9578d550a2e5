"""Queues and workers over HTTP: listing, pause/resume with a real worker, limits (429),
the worker registry, and 503 when the store is unreachable."""

from __future__ import annotations

import asyncio
import time
import urllib.parse
from collections.abc import AsyncIterator

import httpx
import pytest

from conveyor import Conveyor
from conveyor.api import create_app
from conveyor.backends.base import OutcomeKind, WorkerInfo
from conveyor.errors import ValidationError
from conveyor.worker import Worker
from tests.api.conftest import assert_error, finish, make_conveyor, submit
from tests.conftest import running
from tests.redis_server import free_port

pytestmark = pytest.mark.timeout(60)


async def _queue(client: httpx.AsyncClient, name: str) -> dict[str, object]:
    response = await client.get("/api/v1/queues")
    assert response.status_code == 200, response.text
    found: dict[str, object] = next(q for q in response.json()["items"] if q["name"] == name)
    return found


async def test_list_shows_counts_settings_and_rate(
    conveyor: Conveyor, client: httpx.AsyncClient
) -> None:
    conveyor.queue("declared", max_length=10)
    first = await submit(client, type="add", parameters=[1, 2])
    await submit(client, type="add", parameters=[3, 4])
    await submit(client, type="add", parameters=[5, 6], delay=3600)
    backend = await conveyor.backend()
    await finish(backend, first, OutcomeKind.COMPLETED, result=3)
    default = await _queue(client, "default")
    assert default == {
        "name": "default",
        "pending": 1,
        "scheduled": 1,
        "running": 0,
        "completed": 1,
        "failed": 0,
        "cancelled": 0,
        "paused": False,
        "maxLength": None,
        "completedPerMinute": 1,
        "consumers": 0,
    }
    declared = await _queue(client, "declared")
    assert declared["maxLength"] == 10
    assert declared["pending"] == 0


async def test_pause_and_resume_answer_with_the_queue(client: httpx.AsyncClient) -> None:
    await submit(client, type="send_email", parameters={"to": "a@example.com"})
    paused = await client.post("/api/v1/queues/mail/pause")
    assert paused.status_code == 200, paused.text
    assert paused.json()["paused"] is True
    assert paused.json()["pending"] == 1
    assert (await client.post("/api/v1/queues/mail/pause")).json()["paused"] is True
    assert (await _queue(client, "mail"))["paused"] is True
    resumed = await client.post("/api/v1/queues/mail/resume")
    assert resumed.status_code == 200
    assert resumed.json()["paused"] is False
    empty = await client.post("/api/v1/queues/nothing-here/pause")
    assert empty.json()["name"] == "nothing-here"
    assert empty.json()["pending"] == 0


async def test_bad_queue_names_are_refused(client: httpx.AsyncClient) -> None:
    assert_error(await client.post("/api/v1/queues/" + "q" * 101 + "/pause"), 422)
    assert_error(await client.post("/api/v1/queues/%01/pause"), 422)
    assert_error(await client.get("/api/v1/queues/default/pause"), 405)


@pytest.mark.parametrize("name", [" ", "default ", " default", "\tq", "q\u00a0", "a/b"])
async def test_queue_names_with_whitespace_at_an_end_are_refused_everywhere(
    conveyor: Conveyor, client: httpx.AsyncClient, name: str
) -> None:
    # Not another queue that looks like "default": refused at every edge.
    body = {"type": "add", "parameters": [1, 2], "queue": name}
    assert_error(await client.post("/api/v1/jobs", json=body), 422)
    schedule = {"type": "add", "parameters": [1, 2], "interval": 60, "queue": name}
    assert_error(await client.post("/api/v1/schedules", json=schedule), 422)
    if "/" not in name:
        quoted = urllib.parse.quote(name, safe="")
        assert_error(await client.post(f"/api/v1/queues/{quoted}/pause"), 422)
    with pytest.raises(ValidationError, match="whitespace"):
        await conveyor.get_task("add").options(queue=name).enqueue(1, 2)
    with pytest.raises(ValidationError):
        conveyor.queue(name)
    assert (await client.get("/api/v1/jobs")).json()["items"] == []


async def test_inner_spaces_in_a_queue_name_are_fine(client: httpx.AsyncClient) -> None:
    await submit(client, type="add", parameters=[1, 2], queue="video encoding")
    assert (await _queue(client, "video encoding"))["pending"] == 1


async def test_a_paused_queue_is_not_worked_until_resumed(
    conveyor: Conveyor, client: httpx.AsyncClient
) -> None:
    async with running(Worker(conveyor, queues=["default"], concurrency=4)):
        done = await submit(client, type="add", parameters=[1, 1])
        handle = conveyor.job(done)
        assert await handle.result(timeout=5) == 2
        await client.post("/api/v1/queues/default/pause")
        await asyncio.sleep(0.1)
        ids = [await submit(client, type="add", parameters=[i, i]) for i in range(3)]
        await asyncio.sleep(1.2)  # a worker stops taking a paused queue's jobs within 1 s
        for job_id in ids:
            status = (await client.get(f"/api/v1/jobs/{job_id}")).json()["status"]
            assert status == "pending"
        started = time.monotonic()
        await client.post("/api/v1/queues/default/resume")
        results = [await conveyor.job(i).result(timeout=5) for i in ids]
        assert results == [0, 2, 4]
        assert time.monotonic() - started < 2.0


async def test_a_full_queue_answers_429_with_retry_after(
    conveyor: Conveyor, client: httpx.AsyncClient
) -> None:
    conveyor.queue("mail", max_length=2)
    await conveyor.configure_queues()
    for _ in range(2):
        await submit(client, type="send_email", parameters={"to": "a@example.com"})
    keyed = await client.post(
        "/api/v1/jobs",
        json={"type": "send_email", "parameters": {"to": "x"}, "idempotencyKey": "k1"},
    )
    error = assert_error(keyed, 429, "QUEUE_FULL")
    assert keyed.headers["Retry-After"] == "1"
    assert error["details"]["queue"] == "mail"
    assert (await _queue(client, "mail"))["maxLength"] == 2
    # Other queues still take jobs.
    await submit(client, type="add", parameters=[1, 2])


async def test_workers_appear_and_disappear(conveyor: Conveyor, client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/workers")).json() == {"items": []}
    worker = Worker(conveyor, queues=["default", "mail"], concurrency=7, worker_id="w-test")
    async with running(worker):
        async with asyncio.timeout(5):  # registered as the worker starts
            while not (items := (await client.get("/api/v1/workers")).json()["items"]):
                await asyncio.sleep(0.02)
        assert [w["id"] for w in items] == ["w-test"]
        (shown,) = items
        assert shown["queues"] == ["default", "mail"]
        assert shown["concurrency"] == 7
        assert shown["inFlight"] == 0
        assert isinstance(shown["pid"], int)
        assert shown["host"]
        assert shown["startedAt"].endswith("Z")
        first_beat = shown["lastHeartbeat"]
        await asyncio.sleep(1.3)
        again = (await client.get("/api/v1/workers")).json()["items"][0]
        assert again["lastHeartbeat"] > first_beat  # refreshed by the heartbeat
    assert (await client.get("/api/v1/workers")).json() == {"items": []}  # clean shutdown


async def test_consumers_count_live_workers_and_a_job_nobody_consumes_is_logged(
    conveyor: Conveyor, client: httpx.AsyncClient, caplog: pytest.LogCaptureFixture
) -> None:
    backend = await conveyor.backend()
    now = time.time()
    for worker_id, queues in (("w1", ("default", "cpu")), ("w2", ("default",))):
        info = WorkerInfo(worker_id, "h", 1, queues, 1, 0, now, now)
        await backend.register_worker(info, 30)
    await submit(client, type="add", parameters=[1, 2])  # consumed: no warning
    await submit(client, type="add", parameters=[1, 2], queue="orphan")
    consumers = {
        q["name"]: q["consumers"] for q in (await client.get("/api/v1/queues")).json()["items"]
    }
    assert consumers == {"default": 2, "cpu": 1, "orphan": 0}

    def warnings() -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == "conveyor.api.consumers"]

    async with asyncio.timeout(5):
        while not warnings():
            await asyncio.sleep(0.01)
    (warning,) = warnings()
    assert "'orphan'" in warning
    assert "--queues orphan" in warning
    await submit(client, type="add", parameters=[1, 2], queue="orphan")  # once a minute
    await submit(client, type="add", parameters=[1, 2], queue="cpu")
    await asyncio.sleep(0.05)  # a background check would have run by now
    assert len(warnings()) == 1


async def test_a_dead_worker_expires(conveyor: Conveyor, client: httpx.AsyncClient) -> None:
    backend = await conveyor.backend()
    now = time.time()
    await backend.register_worker(WorkerInfo("ghost", "h", 1, ("default",), 1, 0, now, now), 0.3)
    assert len((await client.get("/api/v1/workers")).json()["items"]) == 1
    await asyncio.sleep(0.5)
    assert (await client.get("/api/v1/workers")).json() == {"items": []}


@pytest.fixture
async def unreachable() -> AsyncIterator[httpx.AsyncClient]:
    """An API whose store is a Redis nobody listens on."""
    app = make_conveyor()
    app.settings = app.settings.replace(url=f"redis://127.0.0.1:{free_port()}/0")
    transport = httpx.ASGITransport(app=create_app(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c
    await app.aclose()


JOB = "/api/v1/jobs/0190aaaa-0000-7000-8000-000000000000"


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/api/v1/jobs", None),
        ("POST", "/api/v1/jobs", {"type": "add", "parameters": [1, 2]}),
        ("GET", JOB, None),
        ("DELETE", JOB, None),
        ("POST", JOB + "/retry", None),
        ("GET", "/api/v1/queues", None),
        ("POST", "/api/v1/queues/default/pause", None),
        ("POST", "/api/v1/queues/default/resume", None),
        ("GET", "/api/v1/workers", None),
        ("GET", "/api/v1/events/stream", None),
        ("GET", "/api/v1/schedules", None),
        ("GET", "/readyz", None),
    ],
)
async def test_an_unreachable_store_answers_503_everywhere(
    unreachable: httpx.AsyncClient, method: str, path: str, body: object
) -> None:
    response = await unreachable.request(method, path, json=body)
    assert_error(response, 503, "UNAVAILABLE")
    assert int(response.headers["Retry-After"]) > 0
