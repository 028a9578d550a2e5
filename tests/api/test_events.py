"""The event hub and ``GET /api/v1/events/stream`` (SSE), against a real uvicorn server.

Every stream test runs on the in-memory store and on SQLite. Jobs are driven through
their lifecycle with the store's own calls, so each event is produced exactly when the
test says.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import uvicorn
from fastapi import FastAPI

from conveyor import Conveyor, Settings
from conveyor.api import create_app
from conveyor.api.events import (
    Catchup,
    CloseReason,
    EventHub,
    SubscriptionClosed,
    publish,
    render_event,
)
from conveyor.api.events.sse import _without_overlap
from conveyor.backends.base import Backend, Event, Outcome, OutcomeKind
from conveyor.job import Job
from conveyor.results import INLINE_RESULT_MAX

from .conftest import assert_error

STREAM = "/api/v1/events/stream"
JOBS = "/api/v1/jobs"


# -- a live server ------------------------------------------------------------------------
def make_conveyor(url: str, **settings: Any) -> Conveyor:
    """An app with two tasks on ``url``; never reads the environment."""
    app = Conveyor(settings=Settings(url=url, **settings))

    @app.task()
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task()
    async def echo(value: str) -> str:
        return value

    return app


class _Server(uvicorn.Server):
    @contextlib.contextmanager
    def capture_signals(self) -> Any:
        yield  # the test process keeps its own signal handlers


@dataclass
class Live:
    """A running server: its app, hub, store and base URL."""

    conveyor: Conveyor
    app: FastAPI
    hub: EventHub
    backend: Backend
    base_url: str
    port: int
    server: Any = field(repr=False)


@contextlib.asynccontextmanager
async def serving(
    conveyor: Conveyor, *, send_buffer: int | None = None, **hub_options: Any
) -> AsyncIterator[Live]:
    """Serve ``conveyor``'s API on a free loopback port for the block.

    ``hub_options`` override the hub's settings; ``send_buffer`` shrinks the kernel send
    buffer of accepted connections (inherited from the listening socket).
    """
    app = create_app(conveyor)
    hub: EventHub = app.state.event_hub
    for name, value in hub_options.items():
        setattr(hub, name, value)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if send_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, send_buffer)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", lifespan="on", timeout_graceful_shutdown=5)
    server = _Server(config)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    try:
        for _ in range(500):
            if server.started or task.done():
                break
            await asyncio.sleep(0.01)
        assert server.started, "the server did not start"
        backend = await conveyor.backend()
        yield Live(conveyor, app, hub, backend, f"http://127.0.0.1:{port}", port, server)
    finally:
        hub.close()  # what the runner does on SIGTERM: streams end, then the server
        server.should_exit = True
        try:
            await asyncio.wait_for(task, 10)
        finally:
            sock.close()


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/events.db"


@pytest.fixture
async def live(store_url: str) -> AsyncIterator[Live]:
    conveyor = make_conveyor(store_url)
    try:
        async with serving(conveyor) as server:
            yield server
    finally:
        await conveyor.aclose()


@pytest.fixture
async def memory_live() -> AsyncIterator[Live]:
    conveyor = make_conveyor("memory://")
    try:
        async with serving(conveyor, keepalive_interval=0.2) as server:
            yield server
    finally:
        await conveyor.aclose()


@pytest.fixture
async def http(live: Live) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=live.base_url, timeout=10) as client:
        yield client


# -- reading SSE --------------------------------------------------------------------------
@dataclass
class Message:
    """One SSE message."""

    data: str | None = None
    id: str | None = None
    event: str | None = None
    retry: str | None = None

    def json(self) -> dict[str, Any]:
        assert self.data is not None
        body: dict[str, Any] = orjson.loads(self.data)
        return body


class SSEReader:
    """Parses a streamed response into messages; remembers comments."""

    def __init__(self, response: httpx.Response) -> None:
        self.response = response
        self._lines = response.aiter_lines()
        self.comments: list[str] = []

    async def message(self, timeout: float = 5.0) -> Message | None:
        """The next message (``None`` when the stream ends)."""
        message = Message()
        seen = False
        async with asyncio.timeout(timeout):
            async for line in self._lines:
                if not line:
                    if seen:
                        return message
                    continue
                if line.startswith(":"):
                    self.comments.append(line[1:].strip())
                    continue
                name, _, value = line.partition(":")
                setattr(message, name, value.removeprefix(" "))
                seen = True
        return message if seen else None

    async def data(self, timeout: float = 5.0) -> dict[str, Any]:
        """The next message that carries data, decoded."""
        while True:
            message = await self.message(timeout)
            assert message is not None, "the stream ended"
            if message.data is not None:
                assert message.event is None, message
                body = message.json()
                assert body["eventId"] == message.id
                return body

    async def events(self, count: int, timeout: float = 5.0) -> list[dict[str, Any]]:
        return [await self.data(timeout) for _ in range(count)]


@contextlib.asynccontextmanager
async def stream(
    client: httpx.AsyncClient, params: dict[str, str] | None = None, **headers: str
) -> AsyncIterator[SSEReader]:
    async with client.stream("GET", STREAM, params=params, headers=headers) as response:
        assert response.status_code == 200, await response.aread()
        reader = SSEReader(response)
        first = await reader.message()
        assert first is not None
        assert first.retry == "1000"
        yield reader


async def wait_until(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


# -- driving jobs ---------------------------------------------------------------------------
async def submit(client: httpx.AsyncClient, type: str = "add", **parameters: Any) -> str:
    parameters = parameters or {"a": 1, "b": 2}
    response = await client.post(JOBS, json={"type": type, "parameters": parameters})
    assert response.status_code == 202, response.text
    job_id: str = response.json()["jobId"]
    return job_id


async def start(backend: Backend, job_id: str) -> Job:
    jobs = await backend.fetch(["default"], "tester", 1000, 30)
    job = next(j for j in jobs if j.id == job_id)
    others = [Outcome(j.id, "tester", j.attempts, OutcomeKind.RELEASED) for j in jobs if j != job]
    assert all(await backend.complete(others))
    return job


async def finish(backend: Backend, job: Job, kind: OutcomeKind, **fields: Any) -> None:
    outcome = Outcome(job.id, "tester", job.attempts, kind, **fields)
    assert await backend.complete([outcome]) == [True]


async def run_job(client: httpx.AsyncClient, backend: Backend, result: Any = 3) -> str:
    """Submit a job and take it to completed: created, started, progress, completed."""
    job_id = await submit(client)
    job = await start(backend, job_id)
    assert await backend.set_progress(job.id, job.attempts, 50)
    await finish(backend, job, OutcomeKind.COMPLETED, result=result)
    return job_id


# -- rendering ------------------------------------------------------------------------------
def test_render_event_is_camel_case_with_rfc3339_instants() -> None:
    event = Event(
        "00000000000000000007",
        "job_retrying",
        "job-1",
        1_700_000_000.5,
        {"attempt": 2, "run_at": 1_700_000_010.0, "task_type": "add", "type": "x", "ok": True},
    )
    assert render_event(event) == {
        "eventId": "00000000000000000007",
        "type": "job_retrying",
        "jobId": "job-1",
        "at": "2023-11-14T22:13:20.500Z",
        "attempt": 2,
        "runAt": "2023-11-14T22:13:30.000Z",
        "taskType": "add",
        "ok": True,
    }
    item = publish(event)
    assert item.sse().startswith(b"id: 00000000000000000007\ndata: {")
    assert item.sse().endswith(b"}\n\n")
    assert b"\n" not in item.json.encode()


def test_unsafe_event_id_is_left_out_of_the_id_line() -> None:
    item = publish(Event("a\nb", "job_created", "j", 0.0))
    assert item.sse().startswith(b"data: ")


# -- one job's events, in order -----------------------------------------------------------
async def test_stream_headers(live: Live, http: httpx.AsyncClient) -> None:
    async with http.stream("GET", STREAM) as response:
        assert response.status_code == 200
        assert response.headers["content-type"] == "text/event-stream"
        assert response.headers["cache-control"] == "no-cache"
        assert response.headers["x-accel-buffering"] == "no"
        assert "content-length" not in response.headers


async def test_lifecycle_in_order(live: Live, http: httpx.AsyncClient) -> None:
    async with stream(http) as reader:
        job_id = await run_job(http, live.backend, result={"sum": 3})
        events = await reader.events(4)
    assert [e["type"] for e in events] == [
        "job_created",
        "job_started",
        "job_progress",
        "job_completed",
    ]
    assert {e["jobId"] for e in events} == {job_id}
    assert events[1]["attempt"] == 1
    assert events[2]["progress"] == 50
    assert events[3]["result"] == {"sum": 3}
    assert all(e["at"].endswith("Z") and "T" in e["at"] for e in events)
    ids = [e["eventId"] for e in events]
    assert len(set(ids)) == 4


async def test_failure_retry_and_cancel_events(live: Live, http: httpx.AsyncClient) -> None:
    async with stream(http) as reader:
        job_id = await submit(http)
        job = await start(live.backend, job_id)
        error = {"code": "TASK_FAILED", "message": "boom", "details": {"retryable": True}}
        await finish(live.backend, job, OutcomeKind.RETRY, error=error, retry_at=0.0)
        job = await start(live.backend, job_id)
        await finish(live.backend, job, OutcomeKind.FAILED, error=error)
        other = await submit(http)
        assert (await http.delete(f"{JOBS}/{other}")).status_code == 200
        events = await reader.events(7)
    assert [(e["type"], e["jobId"]) for e in events] == [
        ("job_created", job_id),
        ("job_started", job_id),
        ("job_retrying", job_id),
        ("job_started", job_id),
        ("job_failed", job_id),
        ("job_created", other),
        ("job_cancelled", other),
    ]
    assert events[2]["error"] == error
    assert events[2]["runAt"] == "1970-01-01T00:00:00.000Z"
    assert events[3]["attempt"] == 2
    assert events[4]["error"] == error


async def test_released_events_pass_through(live: Live, http: httpx.AsyncClient) -> None:
    async with stream(http, {"type": "job_released"}) as reader:
        job_id = await submit(http)
        job = await start(live.backend, job_id)
        await finish(live.backend, job, OutcomeKind.RELEASED)
        (event,) = await reader.events(1)
    assert (event["type"], event["jobId"]) == ("job_released", job_id)


async def test_starts_from_now(live: Live, http: httpx.AsyncClient) -> None:
    await submit(http)  # before anyone listens: not shown
    async with stream(http) as reader:
        new = await submit(http)
        event = await reader.data()
    assert (event["type"], event["jobId"]) == ("job_created", new)


async def test_with_a_real_worker(live: Live, http: httpx.AsyncClient) -> None:
    from conveyor.worker import Worker

    from ..conftest import running

    async with (
        stream(http, {"type": "job_completed"}) as reader,
        running(Worker(live.conveyor, concurrency=4)),
    ):
        job_id = await submit(http, a=20, b=22)
        event = await reader.data(timeout=10)
    assert (event["jobId"], event["result"]) == (job_id, 42)


# -- filters --------------------------------------------------------------------------------
async def test_job_filter(live: Live, http: httpx.AsyncClient) -> None:
    watched = await submit(http)
    other = await submit(http)
    async with stream(http, {"jobId": watched}) as reader:
        for job_id in (watched, other):
            job = await start(live.backend, job_id)
            await finish(live.backend, job, OutcomeKind.COMPLETED, result=1)
        events = await reader.events(2)
    assert [(e["type"], e["jobId"]) for e in events] == [
        ("job_started", watched),
        ("job_completed", watched),
    ]


async def test_type_filter(live: Live, http: httpx.AsyncClient) -> None:
    async with (
        stream(http, {"type": "job_completed, job_created"}) as both,
        stream(http, {"type": "job_progress"}) as progress,
    ):
        job_id = await run_job(http, live.backend)
        events = await both.events(2)
        (only,) = await progress.events(1)
    assert [e["type"] for e in events] == ["job_created", "job_completed"]
    assert (only["type"], only["jobId"], only["progress"]) == ("job_progress", job_id, 50)


async def test_job_and_type_filters_combine(live: Live, http: httpx.AsyncClient) -> None:
    job_id = await submit(http)
    async with stream(http, {"jobId": job_id, "type": "job_completed"}) as reader:
        await run_job(http, live.backend)  # another job: not shown
        job = await start(live.backend, job_id)
        await finish(live.backend, job, OutcomeKind.COMPLETED, result=7)
        (event,) = await reader.events(1)
    assert (event["type"], event["jobId"], event["result"]) == ("job_completed", job_id, 7)


async def test_bad_filters(live: Live, http: httpx.AsyncClient) -> None:
    error = assert_error(await http.get(STREAM, params={"type": "job_exploded"}), 422)
    assert error["code"] == "VALIDATION_ERROR"
    assert "job_created" in error["details"]["known"]
    assert_error(await http.get(STREAM, params={"type": "job_created,nope"}), 422)
    assert_error(await http.get(STREAM, params={"jobId": "no such/job"}), 404, "NOT_FOUND")
    assert_error(await http.get(STREAM, params={"jobId": "a" * 300}), 422, "VALIDATION_ERROR")
    error = assert_error(await http.get(STREAM, params={"jobId": "missing-job"}), 404)
    assert error["details"] == {"jobId": "missing-job"}
    headers = {"Last-Event-ID": "not an id"}
    assert_error(await http.get(STREAM, headers=headers), 422, "VALIDATION_ERROR")
    assert_error(await http.get(STREAM, params={"lastEventId": "x\x01"}), 422)
    assert live.hub.subscriber_count == 0


# -- resuming -------------------------------------------------------------------------------
async def stored_ids_after(backend: Backend, after: str) -> list[str]:
    ids: list[str] = []
    while page := await backend.read_events(after, 1000):
        ids += [e.id for e in page]
        after = page[-1].id
    return ids


async def test_resume_replays_then_joins_live_without_gaps_or_repeats(
    store_url: str,
) -> None:
    conveyor = make_conveyor(store_url)
    # Small pages make the replay span several reads, and jobs keep moving while the
    # client reconnects, so the replay has to meet a live feed that is moving too.
    async with (
        serving(conveyor, page_size=7, poll_interval=0.03) as live,
        httpx.AsyncClient(base_url=live.base_url, timeout=10) as http,
    ):
        async with stream(http) as reader:
            for _ in range(5):
                await run_job(http, live.backend)
            first = await reader.events(20)
        resume_after = first[9]["eventId"]  # the client saw ten, then dropped

        stop = asyncio.Event()

        async def produce() -> None:
            while not stop.is_set():
                await run_job(http, live.backend)
                await asyncio.sleep(0.005)

        producer = asyncio.create_task(produce())
        await asyncio.sleep(0.1)
        async with stream(http, **{"Last-Event-ID": resume_after}) as reader:
            await asyncio.sleep(0.2)
            stop.set()
            await producer
            await run_job(http, live.backend)  # the end marker: a completed job
            expected = await stored_ids_after(live.backend, resume_after)
            received = [e["eventId"] for e in await reader.events(len(expected))]
            assert received == expected
            await asyncio.sleep(0.2)  # nothing else (no repeats) arrives
            await run_job(http, live.backend)
            after = await reader.data()
            assert after["type"] == "job_created"
            assert after["eventId"] not in received
    await conveyor.aclose()


async def test_resume_with_query_parameter_and_header_wins(
    live: Live, http: httpx.AsyncClient
) -> None:
    async with stream(http) as reader:
        await run_job(http, live.backend)
        events = await reader.events(4)
    ids = [e["eventId"] for e in events]
    async with stream(http, {"lastEventId": ids[1]}) as reader:
        assert [e["eventId"] for e in await reader.events(2)] == ids[2:]
    async with stream(http, {"lastEventId": ids[0]}, **{"Last-Event-ID": ids[2]}) as reader:
        assert [e["eventId"] for e in await reader.events(1)] == ids[3:]
    async with stream(http, {"type": "job_completed", "lastEventId": ids[0]}) as reader:
        assert [e["eventId"] for e in await reader.events(1)] == ids[3:]


async def test_resume_at_the_live_edge_replays_nothing(live: Live, http: httpx.AsyncClient) -> None:
    async with stream(http) as reader:
        await run_job(http, live.backend)
        last = (await reader.events(4))[-1]["eventId"]
    async with stream(http, **{"Last-Event-ID": last}) as reader:
        job_id = await submit(http)
        event = await reader.data()
    assert (event["type"], event["jobId"]) == ("job_created", job_id)


async def feed(conveyor: Conveyor, count: int) -> list[str]:
    """Store ``count`` events (job_created ones); return all ids in the feed."""
    for _ in range(count):
        await conveyor.submit("add", (1, 2))
    backend = await conveyor.backend()
    return [e.id for e in await backend.read_events(None, 100_000)]


async def test_catchup_stops_where_the_live_feed_starts() -> None:
    async with make_conveyor("memory://") as conveyor:
        backend = await conveyor.backend()
        ids = await feed(conveyor, 10)
        catchup = Catchup(backend, ids[1], ids[6], page_size=2)
        read: list[str] = []
        while page := await catchup.next_page():
            read += [e.id for e in page]
        assert read == ids[2:7]
        assert catchup.reached
        assert await catchup.overlap() == set()


async def test_catchup_ahead_of_the_hub_skips_what_the_live_feed_repeats() -> None:
    # The client's id came from a replica whose hub is ahead of this one's: live events
    # up to that id must not be sent again.
    async with make_conveyor("memory://") as conveyor:
        backend = await conveyor.backend()
        ids = await feed(conveyor, 10)
        catchup = Catchup(backend, ids[6], ids[3], page_size=2)
        read: list[str] = []
        while page := await catchup.next_page():
            read += [e.id for e in page]
        assert read == ids[7:]
        assert not catchup.reached
        skip = await catchup.overlap()
        assert skip == set(ids[4:])
        live = [publish(e) for e in await backend.read_events(ids[3], 100)]
        assert _without_overlap(live[:2], skip) == []
        assert _without_overlap(live[2:], skip) == []
        assert skip == set()


async def test_catchup_from_a_foreign_id_does_not_skip() -> None:
    async with make_conveyor("memory://") as conveyor:
        backend = await conveyor.backend()
        ids = await feed(conveyor, 4)
        catchup = Catchup(backend, "0", ids[3], page_size=100)
        assert [e.id for e in await catchup.next_page()] == ids
        assert catchup.reached
        catchup = Catchup(backend, "0", None, page_size=100)  # the hub has read nothing
        assert [e.id for e in await catchup.next_page()] == ids
        assert await catchup.overlap() == set(ids)


# -- keep-alive, disconnects, shutdown --------------------------------------------------------
async def test_keepalive_comments(memory_live: Live) -> None:
    async with (
        httpx.AsyncClient(base_url=memory_live.base_url, timeout=10) as http,
        stream(http) as reader,
    ):
        with pytest.raises(TimeoutError):
            await reader.message(timeout=0.7)
        assert reader.comments.count("keep-alive") >= 2


async def test_disconnect_ends_the_subscription(memory_live: Live) -> None:
    hub = memory_live.hub
    async with (
        httpx.AsyncClient(base_url=memory_live.base_url, timeout=10) as http,
        stream(http),
    ):
        assert hub.subscriber_count == 1
        baseline = len(asyncio.all_tasks())
        async with stream(http):
            assert hub.subscriber_count == 2
        await wait_until(lambda: hub.subscriber_count == 1, timeout=2)
        # The closed stream's request task and disconnect watcher are gone too.
        await wait_until(lambda: len(asyncio.all_tasks()) <= baseline, timeout=2)


async def test_server_shutdown_ends_streams() -> None:
    conveyor = make_conveyor("memory://")
    async with contextlib.AsyncExitStack() as stack:
        live = await stack.enter_async_context(serving(conveyor))
        http = await stack.enter_async_context(
            httpx.AsyncClient(base_url=live.base_url, timeout=10)
        )
        reader = await stack.enter_async_context(stream(http))
        live.hub.close()
        assert await reader.message(timeout=2) is None  # the stream ended cleanly
        assert not live.hub.running
        assert_error(await http.get(STREAM), 503, "UNAVAILABLE")
    await conveyor.aclose()


async def test_hub_poller_stops_when_idle_and_restarts_from_now() -> None:
    async with make_conveyor("memory://") as conveyor:
        hub = EventHub(conveyor, poll_interval=0.01, idle_timeout=0.05)
        subscription = await hub.subscribe()
        assert hub.running
        subscription.close()
        await wait_until(lambda: not hub.running, timeout=2)
        await feed(conveyor, 3)  # while nobody listens
        subscription = await hub.subscribe()
        ids = await feed(conveyor, 1)
        (item,) = await subscription.next(timeout=2)
        assert item.id == ids[-1]
        await hub.aclose()
        with pytest.raises(SubscriptionClosed) as closed:
            await subscription.next(timeout=1)
        assert closed.value.reason is CloseReason.SHUTDOWN


# -- slow readers -----------------------------------------------------------------------------
async def test_slow_subscriber_is_dropped_others_get_everything() -> None:
    async with make_conveyor("memory://") as conveyor:
        hub = EventHub(conveyor, poll_interval=0.005, page_size=20, queue_size=50)
        slow = await hub.subscribe()
        fast = await hub.subscribe()

        async def produce() -> None:
            for index in range(500):
                await conveyor.submit("add", (1, 2))
                if index % 10 == 0:
                    await asyncio.sleep(0.001)

        producer = asyncio.create_task(produce())
        received: list[str] = []
        async with asyncio.timeout(10):
            while len(received) < 500:
                received += [item.id for item in await fast.next(timeout=1)]
        await producer
        backend = await conveyor.backend()
        assert received == [e.id for e in await backend.read_events(None, 1000)]
        assert slow.closed
        assert hub.subscriber_count == 1
        with pytest.raises(SubscriptionClosed) as closed:
            await slow.next()
        assert closed.value.reason is CloseReason.SLOW
        await hub.aclose()


async def read_raw_until(reader: asyncio.StreamReader, marker: bytes, timeout: float) -> bytes:
    data = b""
    async with asyncio.timeout(timeout):
        while marker not in data:
            chunk = await reader.read(65536)
            if not chunk:
                break
            data += chunk
    return data


async def open_raw_stream(
    port: int, receive_buffer: int | None = None
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A bare HTTP/1.1 SSE request (cheap enough to open hundreds)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    if receive_buffer is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    reader, writer = await asyncio.open_connection(sock=sock)
    writer.write(f"GET {STREAM} HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".encode())
    await writer.drain()
    return reader, writer


async def test_slow_client_is_dropped_over_the_wire() -> None:
    conveyor = make_conveyor("memory://")
    big = "x" * (INLINE_RESULT_MAX - 2)  # the largest result an event carries
    async with (
        serving(conveyor, send_buffer=16384, queue_size=20) as live,
        httpx.AsyncClient(base_url=live.base_url, timeout=10) as http,
        stream(http, {"type": "job_completed"}) as fast,
    ):
        slow_reader, slow_writer = await open_raw_stream(live.port, receive_buffer=4096)
        try:
            await wait_until(lambda: live.hub.subscriber_count == 2)
            reading = asyncio.create_task(fast.events(100, timeout=20))
            completed = [await run_job(http, live.backend, result=big) for _ in range(100)]
            assert [e["jobId"] for e in await reading] == completed
            await wait_until(lambda: live.hub.subscriber_count == 1)
            # Once it reads, the slow client finds an error message, then the stream's end.
            data = await read_raw_until(slow_reader, b"\r\n0\r\n\r\n", timeout=20)
            assert b"event: error\ndata: " in data
            tail = data[data.index(b"event: error") :].split(b"\n")[1].removeprefix(b"data: ")
            assert orjson.loads(tail)["error"]["code"] == "SLOW_CONSUMER"
        finally:
            slow_writer.close()
    await conveyor.aclose()


# -- many idle subscribers ----------------------------------------------------------------------
def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="needs /proc (Linux)")
async def test_200_idle_subscribers_stay_small() -> None:
    conveyor = make_conveyor("memory://")
    async with (
        serving(conveyor) as live,
        httpx.AsyncClient(base_url=live.base_url, timeout=10) as http,
    ):
        async with stream(http):  # warm up: the hub, the route, the first connection
            pass
        before = rss_bytes()
        clients = [await open_raw_stream(live.port) for _ in range(200)]
        await wait_until(lambda: live.hub.subscriber_count == 200, timeout=20)
        growth = rss_bytes() - before
        assert growth < 50 * 1024 * 1024, f"RSS grew by {growth / 1e6:.1f} MB"
        job_id = await submit(http)
        for reader, _ in clients:  # every one of them is live
            data = await read_raw_until(reader, job_id.encode(), timeout=10)
            assert b'"type":"job_created"' in data
        for _, writer in clients:
            writer.close()
        await wait_until(lambda: live.hub.subscriber_count == 0, timeout=10)
    await conveyor.aclose()


# -- auth and docs ------------------------------------------------------------------------------
async def test_stream_needs_the_token_when_configured() -> None:
    conveyor = make_conveyor("memory://", api_tokens=("s3cret",))
    async with (
        serving(conveyor) as live,
        httpx.AsyncClient(base_url=live.base_url, timeout=10) as http,
    ):
        assert_error(await http.get(STREAM), 401, "UNAUTHORIZED")
        async with stream(http, Authorization="Bearer s3cret") as reader:
            job_id = await submit_with_token(http, "s3cret")
            assert (await reader.data())["jobId"] == job_id
    await conveyor.aclose()


async def submit_with_token(http: httpx.AsyncClient, token: str) -> str:
    response = await http.post(
        JOBS,
        json={"type": "add", "parameters": [1, 2]},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert response.status_code == 202, response.text
    job_id: str = response.json()["jobId"]
    return job_id


async def test_openapi_documents_the_stream(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    operation = spec["paths"][STREAM]["get"]
    assert "text/event-stream" in operation["responses"]["200"]["content"]
    names = {p["name"] for p in operation["parameters"]}
    assert {"jobId", "type", "lastEventId"} <= names


async def test_a_failing_hub_ends_its_streams(monkeypatch: pytest.MonkeyPatch) -> None:
    async with make_conveyor("memory://") as conveyor:
        hub = EventHub(conveyor, poll_interval=0.01)
        subscription = await hub.subscribe()

        def broken(events: list[Event]) -> None:
            raise RuntimeError("bug")

        monkeypatch.setattr(hub, "_dispatch", broken)
        await conveyor.submit("add", (1, 2))
        with pytest.raises(SubscriptionClosed) as closed:
            await subscription.next(timeout=2)
        assert closed.value.reason is CloseReason.SHUTDOWN
        assert not hub.running
        await hub.aclose()
