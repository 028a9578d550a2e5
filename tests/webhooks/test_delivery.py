"""Webhooks end to end: a real worker, the deliverer, a real HTTP receiver on loopback
(private targets allowed here, as CONVEYOR_WEBHOOK_ALLOW_PRIVATE=1 would)."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conveyor import Conveyor, Settings
from conveyor.api import create_app
from conveyor.errors import NonRetryableError
from conveyor.webhooks import WebhookDeliverer, verify
from conveyor.worker import Worker
from tests.api.conftest import assert_error
from tests.conftest import running
from tests.webhooks.conftest import Receiver

pytestmark = pytest.mark.timeout(60)

SECRET = "whs-test-secret"


def make_app(url: str = "memory://", **settings: Any) -> Conveyor:
    app = Conveyor(settings=Settings(url=url, webhook_allow_private=True, **settings))

    @app.task()
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(retries=0)
    async def boom() -> None:
        raise NonRetryableError("it broke")

    @app.task()
    async def slow() -> None:
        await asyncio.sleep(30)

    @app.task()
    async def text(size: int) -> str:
        return "x" * size

    return app


def fast(app: Conveyor, **options: Any) -> WebhookDeliverer:
    defaults: dict[str, Any] = {"backoff": 0.05, "poll_interval": 0.02, "lock_ttl": 3.0}
    return WebhookDeliverer(app, **(defaults | options))


class Running:
    def __init__(self, deliverer: WebhookDeliverer) -> None:
        self.deliverer = deliverer
        self.task = asyncio.create_task(deliverer.run())

    async def stop(self) -> None:
        self.deliverer.stop()
        await asyncio.wait_for(self.task, 10)


@pytest.fixture
async def app() -> AsyncIterator[Conveyor]:
    conveyor = make_app()
    yield conveyor
    await conveyor.aclose()


@pytest.fixture
async def client(app: Conveyor) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as c:
        yield c


async def webhook_state(app: Conveyor, job_id: str, want: str) -> dict[str, Any]:
    backend = await app.backend()
    async with asyncio.timeout(10):
        while True:
            job = await backend.get_job(job_id)
            assert job is not None
            if job.webhook is not None and job.webhook["state"] == want:
                return job.webhook
            await asyncio.sleep(0.02)


async def test_a_completed_job_is_delivered_signed(
    app: Conveyor, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    deliverer = Running(fast(app))
    try:
        async with running(Worker(app, concurrency=2)):
            submitted = await client.post(
                "/api/v1/jobs",
                json={
                    "type": "add",
                    "parameters": {"a": 2, "b": 3},
                    "callbackUrl": receiver.url,
                    "callbackSecret": SECRET,
                },
            )
            job_id = submitted.json()["jobId"]
            await receiver.wait_for(1)
            state = await webhook_state(app, job_id, "delivered")
    finally:
        await deliverer.stop()
    (got,) = receiver.received
    event = verify(got.body, got.headers, SECRET)
    assert event["jobId"] == job_id
    assert event["status"] == "completed"
    assert event["result"] == 5
    assert event["completedAt"].endswith("Z")
    assert event["sentAt"].endswith("Z")
    assert got.headers["content-type"] == "application/json"
    assert got.headers["x-webhook-id"] == got.headers["webhook-id"] == state["id"]
    assert got.headers["x-webhook-signature"].startswith("sha256=")
    assert got.headers["webhook-signature"].startswith("v1,")
    assert state["attempts"] == 1
    assert state["lastStatus"] == 200
    assert state["deliveredAt"].endswith("Z")
    shown = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert shown["webhook"]["state"] == "delivered"
    assert SECRET not in str(shown)
    assert "callbackSecret" not in shown


async def test_failed_and_cancelled_jobs_are_delivered_too(
    app: Conveyor, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    deliverer = Running(fast(app))
    try:
        async with running(Worker(app, concurrency=2)):
            failed = await client.post(
                "/api/v1/jobs", json={"type": "boom", "callbackUrl": receiver.url}
            )
            cancelled = await client.post(
                "/api/v1/jobs",
                json={"type": "slow", "callbackUrl": receiver.url, "delay": 3600},
            )
            await client.delete(f"/api/v1/jobs/{cancelled.json()['jobId']}")
            await receiver.wait_for(2)
    finally:
        await deliverer.stop()
    import orjson

    bodies = {b["jobId"]: b for b in (orjson.loads(r.body) for r in receiver.received)}
    boom = bodies[failed.json()["jobId"]]
    assert boom["status"] == "failed"
    assert boom["error"]["code"] == "TASK_FAILED"
    assert "result" not in boom
    gone = bodies[cancelled.json()["jobId"]]
    assert gone["status"] == "cancelled"
    assert "error" not in gone
    # Without a callbackSecret the delivery is unsigned (ids and timestamps only).
    for received in receiver.received:
        assert "webhook-signature" not in received.headers
        assert "x-webhook-signature" not in received.headers
        assert received.headers["webhook-id"].startswith("msg_")


async def test_failures_are_retried_with_the_same_id(
    app: Conveyor, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.script = [500, 503]
    deliverer = Running(fast(app))
    try:
        async with running(Worker(app)):
            submitted = await client.post(
                "/api/v1/jobs",
                json={
                    "type": "add",
                    "parameters": [1, 1],
                    "callbackUrl": receiver.url,
                    "callbackSecret": SECRET,
                },
            )
            job_id = submitted.json()["jobId"]
            state = await webhook_state(app, job_id, "delivered")
    finally:
        await deliverer.stop()
    assert len(receiver.received) == 3
    assert state["attempts"] == 3
    ids = {r.headers["webhook-id"] for r in receiver.received}
    assert ids == {state["id"]}
    seen: set[str] = set()
    verify(receiver.received[-1].body, receiver.received[-1].headers, SECRET, seen=seen)
    assert seen == {state["id"]}


async def test_attempts_are_bounded_and_state_is_recorded(
    app: Conveyor, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    receiver.script = [500] * 10
    deliverer = Running(fast(app, max_attempts=3))
    try:
        async with running(Worker(app)):
            submitted = await client.post(
                "/api/v1/jobs",
                json={"type": "add", "parameters": [1, 1], "callbackUrl": receiver.url},
            )
            job_id = submitted.json()["jobId"]
            state = await webhook_state(app, job_id, "failed")
    finally:
        await deliverer.stop()
    assert state["attempts"] == 3
    assert state["lastStatus"] == 500
    assert state["lastError"] == "HTTP 500"
    assert len(receiver.received) == 3


async def test_timeouts_and_refused_connections_are_retried(app: Conveyor) -> None:
    from tests.redis_server import free_port

    backend = await app.backend()
    result = await app.submit(
        "add", (1, 2), callback_url=f"http://127.0.0.1:{free_port()}/nobody-listens"
    )
    (leased,) = await backend.fetch(["default"], "w", 1, 30)
    from conveyor.backends.base import Outcome, OutcomeKind

    await backend.complete([Outcome(leased.id, "w", 1, OutcomeKind.COMPLETED, 3)])
    deliverer = Running(fast(app, max_attempts=2))
    try:
        state = await webhook_state(app, result.job.id, "failed")
    finally:
        await deliverer.stop()
    assert state["attempts"] == 2
    assert state["lastStatus"] is None
    assert "Connect" in state["lastError"]


async def test_only_the_lock_holder_delivers(
    app: Conveyor, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    first, second = Running(fast(app)), Running(fast(app))
    try:
        async with running(Worker(app, concurrency=10)):
            ids = []
            for i in range(20):
                response = await client.post(
                    "/api/v1/jobs",
                    json={"type": "add", "parameters": [i, i], "callbackUrl": receiver.url},
                )
                ids.append(response.json()["jobId"])
            await receiver.wait_for(20)
            await asyncio.sleep(0.3)
        assert [first.deliverer.leading, second.deliverer.leading].count(True) == 1
    finally:
        await first.stop()
        await second.stop()
    assert len(receiver.received) == 20
    assert len({r.headers["webhook-id"] for r in receiver.received}) == 20


async def test_a_restart_resumes_without_sending_twice(tmp_path: Path, receiver: Receiver) -> None:
    url = f"sqlite:///{tmp_path / 'hooks.db'}"
    app = make_app(url)
    try:
        async with running(Worker(app, concurrency=10)):
            done_ids = [
                (await app.submit("add", (i, i), callback_url=receiver.url)).job.id
                for i in range(5)
            ]
            for job_id in done_ids:
                await app.job(job_id).wait(timeout=10)
            first = Running(fast(app, backoff=1.0))
            await receiver.wait_for(5)
            for job_id in done_ids:
                await webhook_state(app, job_id, "delivered")
            # The next delivery keeps failing and is scheduled for retry; then the
            # leader stops. (The receiver fails until then, so the state stays pending
            # however late this poll sees it.)
            receiver.script = [500] * 100
            retried = (await app.submit("add", (9, 9), callback_url=receiver.url)).job.id
            pending = await webhook_state(app, retried, "pending")
            assert pending["attempts"] >= 1
            await first.stop()
            stopped = await app.job(retried).info()
            assert stopped.webhook is not None
            assert stopped.webhook["state"] == "pending"
            failures = stopped.webhook["attempts"]
            receiver.script = []
    finally:
        await app.aclose()

    # A new process: same store, new deliverer. Nothing delivered is sent again, and the
    # retry resumes at the next attempt.
    app = make_app(url)
    second = Running(fast(app))
    try:
        state = await webhook_state(app, retried, "delivered")
        await asyncio.sleep(0.3)
    finally:
        await second.stop()
        await app.aclose()
    assert state["attempts"] == failures + 1
    assert len(receiver.received) == 5 + failures + 1  # 5 deliveries, failures, 1 retry
    deliveries = sum(1 for r in receiver.received if r.headers["webhook-id"] == state["id"])
    assert deliveries == failures + 1


async def test_submitting_a_literal_private_callback_is_refused() -> None:
    app = Conveyor(settings=Settings(url="memory://"))

    @app.task()
    async def noop() -> None:
        return None

    transport = httpx.ASGITransport(app=create_app(app))
    async with httpx.AsyncClient(transport=transport, base_url="http://localhost") as client:
        for url in (
            "http://127.0.0.1/x",
            "http://2130706433/",
            "http://0x7f.1/",
            "http://0177.0.0.1/",
            "http://[::1]/",
            "http://169.254.169.254/latest/meta-data",
            "https://10.0.0.1/",
        ):
            response = await client.post("/api/v1/jobs", json={"type": "noop", "callbackUrl": url})
            error = assert_error(response, 422, "VALIDATION_ERROR")
            assert error["details"]["errors"][0]["loc"] == ["body", "callbackUrl"], url
        ok = await client.post(
            "/api/v1/jobs", json={"type": "noop", "callbackUrl": "https://hooks.example.com/x"}
        )
        assert ok.status_code == 202
    await app.aclose()


async def test_losing_leadership_while_reading_the_feed_ends_the_session_quietly() -> None:
    """An event read just as the lock is lost is left for the next leader: the session
    ends with the lost leadership alone, not with an error."""
    from conveyor.backends.base import Event
    from conveyor.errors import LostLeadershipError
    from conveyor.webhooks.deliverer import _only_lost, _Watermark

    deliverer = fast(make_app())
    mark = _Watermark(None)
    event = Event("1", "job_completed", "j1", 0.0)
    mark.add(event.id, settled=False)

    async def lose() -> None:
        raise LostLeadershipError("lost")

    async def tail(tg: asyncio.TaskGroup, client: httpx.AsyncClient) -> None:
        backend = await deliverer.app.backend()
        with contextlib.suppress(asyncio.CancelledError):  # as a store call may do
            await asyncio.sleep(10)
        deliverer._spawn(tg, backend, client, "j1", event, mark)

    async def session(client: httpx.AsyncClient) -> None:
        async with asyncio.TaskGroup() as tg:
            tg.create_task(lose())
            tg.create_task(tail(tg, client))

    async with httpx.AsyncClient() as client:
        with pytest.raises(BaseExceptionGroup) as ended:
            await session(client)
    assert _only_lost(ended.value)
    assert mark.outstanding == 1  # not delivered, not settled: the cursor stays before it


@pytest.fixture(params=["sqlite", "redis"])
def durable_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'hooks.db'}"
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=hooks-{uuid.uuid4().hex[:10]}"


async def test_a_result_too_large_for_its_event_is_delivered_in_full(
    durable_url: str, receiver: Receiver
) -> None:
    app = make_app(durable_url)
    size = 200_000  # left out of its job_completed event: read from the job's record
    try:
        deliverer = Running(fast(app))
        try:
            async with running(Worker(app)):
                job = await app.get_task("text").options(callback_url=receiver.url).enqueue(size)
                await receiver.wait_for(1)
                await webhook_state(app, job.id, "delivered")
        finally:
            await deliverer.stop()
        backend = await app.backend()
        (event,) = [e for e in await backend.read_events(None, 100) if e.type == "job_completed"]
        assert "result" not in event.data
        assert event.data["resultBytes"] == size + 2
        (got,) = receiver.received
        body = orjson.loads(got.body)
        assert (body["jobId"], body["status"]) == (job.id, "completed")
        assert body["result"] == "x" * size
    finally:
        await app.aclose()


async def completed_count(app: Conveyor) -> int:
    backend = await app.backend()
    return sum(q.completed for q in await backend.queue_stats())


async def settled(app: Conveyor) -> None:
    """Wait until the deliverer's stored cursor is the feed's last event."""
    backend = await app.backend()
    async with asyncio.timeout(30):
        while True:
            last, after = None, None
            while page := await backend.read_events(after, 1000, allow_gap=True):
                last = after = page[-1].id
            if last is not None and await backend.get_cursor("webhooks") == last:
                return
            await asyncio.sleep(0.05)


@pytest.mark.timeout(120)
async def test_a_deliverer_down_during_a_bulk_delivers_every_webhook_once(
    durable_url: str, receiver: Receiver
) -> None:
    app = make_app(durable_url)
    add = app.get_task("add")
    try:
        async with running(Worker(app, concurrency=10)):
            first = Running(fast(app))
            job = (await app.submit("add", (0, 0), callback_url=receiver.url)).job.id
            await webhook_state(app, job, "delivered")
            await first.stop()  # down, with its cursor stored
            hooked = add.options(callback_url=receiver.url)
            bulk = await hooked.enqueue_many([((i, i), {}) for i in range(1000)])
            async with asyncio.timeout(60):
                while await completed_count(app) < 1001:
                    await asyncio.sleep(0.05)
        # More traffic while it is still down: many small feed entries, then a bulk.
        for i in range(200):
            await app.submit("add", (i, 1))
        await add.enqueue_many([((i, 2), {}) for i in range(1000)])

        second = Running(fast(app))
        try:
            await receiver.wait_for(1001, timeout=60)
            await settled(app)
        finally:
            await second.stop()
        ids = [r.headers["webhook-id"] for r in receiver.received]
        assert len(ids) == len(set(ids)) == 1001
        delivered = {orjson.loads(r.body)["jobId"] for r in receiver.received}
        assert delivered == {job, *(h.id for h in bulk)}
    finally:
        await app.aclose()


async def test_a_deliverer_behind_the_retained_feed_says_what_it_lost_and_goes_on(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_app(event_retention_seconds=1.0)
    try:
        backend = await app.backend()
        async with running(Worker(app, concurrency=2)):
            lost = (await app.submit("add", (1, 1), callback_url=receiver.url)).job.id
            await app.job(lost).wait(timeout=10)
            # The deliverer had read the first event when it went down.
            first = (await backend.read_events(None, 1))[0]
            assert first.job_id == lost
            await backend.set_cursor("webhooks", first.id)
            await asyncio.sleep(1.2)  # the store's own clock passes the retention
            kept = (await app.submit("add", (2, 2), callback_url=receiver.url)).job.id
            await app.job(kept).wait(timeout=10)
        await backend.purge()
        deliverer = Running(fast(app))
        try:
            state = await webhook_state(app, kept, "delivered")
        finally:
            await deliverer.stop()
        assert state["attempts"] == 1
        assert [orjson.loads(r.body)["jobId"] for r in receiver.received] == [kept]
        (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
        assert "were trimmed from the event feed" in record.getMessage()
        assert first.id in record.getMessage()
        assert "2 events" in record.getMessage()  # the lost job's start and completion
    finally:
        await app.aclose()


def test_the_deliverer_and_the_event_hub_take_their_settings() -> None:
    from conveyor.api.events import EventHub

    env = {
        "CONVEYOR_WEBHOOK_MAX_ATTEMPTS": "3",
        "CONVEYOR_WEBHOOK_TIMEOUT_SECONDS": "2.5",
        "CONVEYOR_WEBHOOK_CONCURRENCY": "4",
        "CONVEYOR_EVENTS_POLL_SECONDS": "0.2",
    }
    app = Conveyor(settings=Settings.from_env(env, url="memory://"))
    deliverer = WebhookDeliverer(app)
    assert (deliverer.max_attempts, deliverer.timeout, deliverer.concurrency) == (3, 2.5, 4)
    assert EventHub(app).poll_interval == 0.2
    assert WebhookDeliverer(app, max_attempts=5).max_attempts == 5  # an argument wins
