"""``WS /ws/jobs`` against a real uvicorn server, with the ``websockets`` client."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import orjson
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from conveyor.api.middleware import BearerAuthMiddleware
from conveyor.api.routes.ws import choose_subprotocol
from conveyor.backends.base import JobFilter, OutcomeKind
from conveyor.errors import BackendError, BackendUnavailableError
from conveyor.worker import Worker

from ..conftest import running
from .test_events import Live, finish, make_conveyor, serving, start, wait_until
from .test_middleware import Recorder

ADD = {"type": "add", "parameters": {"a": 1, "b": 2}}
TOKEN = "s3cret-token"


@pytest.fixture
async def live(store_url: str) -> AsyncIterator[Live]:
    conveyor = make_conveyor(store_url)
    try:
        async with serving(conveyor) as server:
            yield server
    finally:
        await conveyor.aclose()


@pytest.fixture(params=["memory", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    return "memory://" if request.param == "memory" else f"sqlite:///{tmp_path}/ws.db"


def ws_url(live: Live) -> str:
    return f"ws://127.0.0.1:{live.port}/ws/jobs"


@pytest.fixture
async def ws(live: Live) -> AsyncIterator[ClientConnection]:
    async with connect(ws_url(live)) as socket_:
        yield socket_


async def send(ws: ClientConnection, message: dict[str, Any]) -> None:
    await ws.send(orjson.dumps(message).decode())


async def receive(ws: ClientConnection, timeout: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), timeout)
    message: dict[str, Any] = orjson.loads(raw)
    return message


async def ask(ws: ClientConnection, message: dict[str, Any]) -> dict[str, Any]:
    await send(ws, message)
    return await receive(ws)


async def assert_open(ws: ClientConnection) -> None:
    assert await ask(ws, {"type": "ping", "requestId": "still-there"}) == {
        "type": "pong",
        "requestId": "still-there",
    }


def assert_ws_error(message: dict[str, Any], code: str) -> dict[str, Any]:
    assert message["type"] == "error", message
    error: dict[str, Any] = message["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert error["code"] == code, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], dict)
    return error


# -- submitting and following ------------------------------------------------------------
async def test_submit_then_events_to_completion(live: Live, ws: ClientConnection) -> None:
    accepted = await ask(ws, {"type": "submit_job", "job": ADD, "requestId": 1})
    assert accepted["type"] == "job_accepted"
    assert accepted["requestId"] == 1
    assert accepted["status"] == "pending"
    job_id = accepted["jobId"]
    job = await start(live.backend, job_id)
    assert await live.backend.set_progress(job.id, job.attempts, 40)
    await finish(live.backend, job, OutcomeKind.COMPLETED, result=3)
    events = [await receive(ws) for _ in range(4)]
    assert [e["type"] for e in events] == [
        "job_created",
        "job_started",
        "job_progress",
        "job_completed",
    ]
    assert {e["jobId"] for e in events} == {job_id}
    assert events[2]["progress"] == 40
    assert events[3]["result"] == 3
    assert all(e["at"].endswith("Z") for e in events)


async def test_submit_with_a_real_worker(live: Live, ws: ClientConnection) -> None:
    async with running(Worker(live.conveyor, concurrency=4)):
        job = {"type": "add", "parameters": [40, 2]}
        accepted = await ask(ws, {"type": "submit_job", "job": job})
        seen: list[dict[str, Any]] = []
        while not seen or seen[-1]["type"] != "job_completed":
            seen.append(await receive(ws, timeout=10))
    assert [e["type"] for e in seen] == ["job_created", "job_started", "job_completed"]
    assert {e["jobId"] for e in seen} == {accepted["jobId"]}
    assert seen[-1]["result"] == 42


async def test_many_submissions_each_get_their_created_event(
    live: Live, ws: ClientConnection
) -> None:
    # However the hub's polls fall between a submission and its follow-up, a job's
    # first event is never missed (nor sent twice).
    job_ids = []
    for _ in range(10):
        accepted = await ask(ws, {"type": "submit_job", "job": ADD})
        job_ids.append(accepted["jobId"])
        created = await receive(ws)
        assert (created["type"], created["jobId"]) == ("job_created", accepted["jobId"])
        await asyncio.sleep(0.01)
    await assert_open(ws)
    assert len(set(job_ids)) == 10


async def test_events_dispatched_before_following_are_replayed(
    live: Live, ws: ClientConnection
) -> None:
    # Hold the submission until the hub has dispatched the new job's first event, so
    # that it can only reach the client through the replay.
    enqueue = live.conveyor.enqueue_jobs

    async def slow_enqueue(jobs: Any) -> Any:
        before = live.hub.cursor
        results = await enqueue(jobs)
        await wait_until(lambda: live.hub.cursor != before)
        return results

    live.conveyor.enqueue_jobs = slow_enqueue  # type: ignore[method-assign]
    accepted = await ask(ws, {"type": "submit_job", "job": ADD})
    created = await receive(ws)
    assert (created["type"], created["jobId"]) == ("job_created", accepted["jobId"])
    job = await start(live.backend, accepted["jobId"])
    started = await receive(ws)
    assert (started["type"], started["jobId"]) == ("job_started", job.id)
    await assert_open(ws)  # and nothing twice


async def test_idempotent_submission_answers_the_same_job(ws: ClientConnection) -> None:
    job = {**ADD, "idempotencyKey": "k-1"}
    first = await ask(ws, {"type": "submit_job", "job": job})
    assert (await receive(ws))["type"] == "job_created"
    again = await ask(ws, {"type": "submit_job", "job": job})
    assert again["type"] == "job_accepted"
    assert again["jobId"] == first["jobId"]
    await assert_open(ws)  # and no second job_created


async def test_subscribe_and_unsubscribe(live: Live, ws: ClientConnection) -> None:
    job_id = (await live.conveyor.submit("add", (1, 2))).job.id
    other = (await live.conveyor.submit("add", (3, 4))).job.id
    await asyncio.sleep(0.2)  # the hub is past their job_created events
    assert await ask(ws, {"type": "subscribe", "jobId": job_id, "requestId": "r"}) == {
        "type": "subscribed",
        "requestId": "r",
        "jobId": job_id,
    }
    job = await start(live.backend, job_id)  # releases `other`: not followed, not shown
    started = await receive(ws)
    assert (started["type"], started["jobId"], started["attempt"]) == (
        "job_started",
        job_id,
        1,
    )
    assert await ask(ws, {"type": "unsubscribe", "jobId": job_id}) == {
        "type": "unsubscribed",
        "jobId": job_id,
    }
    await finish(live.backend, job, OutcomeKind.COMPLETED, result=3)
    await asyncio.sleep(0.2)  # the hub has long dispatched it: nothing may arrive
    await assert_open(ws)
    assert (await ask(ws, {"type": "subscribe", "jobId": other}))["type"] == "subscribed"
    await live.backend.cancel(other)
    cancelled = await receive(ws)
    assert (cancelled["type"], cancelled["jobId"]) == ("job_cancelled", other)


async def test_subscribe_to_unknown_jobs(ws: ClientConnection) -> None:
    error = assert_ws_error(await ask(ws, {"type": "subscribe", "jobId": "nope"}), "NOT_FOUND")
    assert error["details"] == {"jobId": "nope"}
    assert_ws_error(await ask(ws, {"type": "subscribe", "jobId": "a/b"}), "NOT_FOUND")
    assert_ws_error(await ask(ws, {"type": "subscribe"}), "VALIDATION_ERROR")
    assert_ws_error(await ask(ws, {"type": "unsubscribe", "jobId": 5}), "VALIDATION_ERROR")
    await assert_open(ws)


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (BackendUnavailableError("Redis get_job: Connection refused"), "UNAVAILABLE"),
        (BackendError("Redis get_job: WRONGTYPE"), "INTERNAL_ERROR"),
        (OverflowError("a bug"), "INTERNAL_ERROR"),
    ],
)
async def test_store_failures_answer_like_http(
    live: Live,
    ws: ClientConnection,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: Exception,
    code: str,
) -> None:
    async def broken(job_id: str) -> None:
        raise failure

    monkeypatch.setattr(live.backend, "get_job", broken)
    job_id = "0190aaaa-0000-7000-8000-000000000000"
    error = assert_ws_error(await ask(ws, {"type": "subscribe", "jobId": job_id}), code)
    if code == "UNAVAILABLE":
        assert error["details"] == {"reason": str(failure)}
    else:  # a bug: logged with its traceback, told as nothing more than that
        assert error == {"code": code, "message": "internal error", "details": {}}
        assert any(r.exc_info and r.exc_info[1] is failure for r in caplog.records)
    await assert_open(ws)


# -- bad messages -------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("raw", "code"),
    [
        ("{not json", "VALIDATION_ERROR"),
        ("[1, 2]", "VALIDATION_ERROR"),
        ('"ping"', "VALIDATION_ERROR"),
        ('{"type": "launch_missiles"}', "VALIDATION_ERROR"),
        ('{"no": "type"}', "VALIDATION_ERROR"),
        ('{"type": "submit_job"}', "VALIDATION_ERROR"),
        ('{"type": "submit_job", "job": [1]}', "VALIDATION_ERROR"),
        ('{"type": "submit_job", "job": {"parameters": {}}}', "VALIDATION_ERROR"),
        ('{"type": "submit_job", "job": {"type": "add", "bogus": 1}}', "VALIDATION_ERROR"),
        ('{"type": "submit_job", "job": {"type": "nope"}}', "UNKNOWN_TASK"),
        ('{"type": "submit_job", "job": {"type": "add", "parameters": {"a": "x"}}}', None),
        (b'{"type": "ping"}', None),
        (b"\xff\xfe", "VALIDATION_ERROR"),
    ],
)
async def test_bad_messages_keep_the_socket_open(
    ws: ClientConnection, raw: str | bytes, code: str | None
) -> None:
    await ws.send(raw)  # bytes go as a binary frame
    answer = await receive(ws)
    if isinstance(raw, bytes) and code is None:
        assert answer == {"type": "pong"}  # binary frames holding JSON are fine
    elif code is None:  # parameters the task cannot take
        error = assert_ws_error(answer, "VALIDATION_ERROR")
        assert error["details"]["errors"][0]["loc"][0] == "parameters"
    else:
        assert_ws_error(answer, code)
    await assert_open(ws)


async def test_invalid_job_body_names_the_field(ws: ClientConnection) -> None:
    message = {"type": "submit_job", "job": {"type": "add", "priority": "high"}, "requestId": 9}
    answer = await ask(ws, message)
    assert answer["requestId"] == 9
    error = assert_ws_error(answer, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["loc"] == ["job", "priority"]


async def test_too_large_message(ws: ClientConnection) -> None:
    huge = orjson.dumps({"type": "ping", "pad": "x" * (1024 * 1024)}).decode()
    error = assert_ws_error(await ask_raw(ws, huge), "PAYLOAD_TOO_LARGE")
    assert error["details"] == {"maxBytes": 1024 * 1024}
    await assert_open(ws)


async def test_a_job_with_an_integer_beyond_64_bits_is_refused(ws: ClientConnection) -> None:
    raw = '{"type": "submit_job", "job": {"type": "add", "parameters": [1, 18446744073709551616]}}'
    error = assert_ws_error(await ask_raw(ws, raw), "VALIDATION_ERROR")
    assert "outside the range" in error["details"]["reason"]


async def ask_raw(ws: ClientConnection, raw: str) -> dict[str, Any]:
    await ws.send(raw)
    return await receive(ws)


# -- auth -----------------------------------------------------------------------------------
@pytest.fixture
async def secured() -> AsyncIterator[Live]:
    conveyor = make_conveyor("memory://", api_tokens=(TOKEN, "other-token"))
    try:
        async with serving(conveyor) as server:
            yield server
    finally:
        await conveyor.aclose()


async def test_no_token_is_refused(secured: Live) -> None:
    with pytest.raises(InvalidStatus) as refused:
        async with connect(ws_url(secured)):
            pass
    assert refused.value.response.status_code == 403


@pytest.mark.parametrize(
    "options",
    [
        {"additional_headers": {"Authorization": "Bearer wrong"}},
        {"subprotocols": ["bearer.wrong"]},
        {"subprotocols": [f"bearer.{TOKEN}", "bearer.other-token"]},
        # A header, even a wrong one, is what counts when there is one.
        {
            "additional_headers": {"Authorization": "Bearer wrong"},
            "subprotocols": [f"bearer.{TOKEN}"],
        },
    ],
)
async def test_wrong_tokens_are_refused(secured: Live, options: dict[str, Any]) -> None:
    with pytest.raises(InvalidStatus):
        async with connect(ws_url(secured), **options):
            pass


async def test_token_in_the_authorization_header(secured: Live) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with connect(ws_url(secured), additional_headers=headers) as ws:
        assert ws.subprotocol is None
        await assert_open(ws)


async def test_token_as_a_subprotocol(secured: Live) -> None:
    async with connect(ws_url(secured), subprotocols=[f"bearer.{TOKEN}"]) as ws:  # type: ignore[list-item]
        # A browser fails a handshake that offered subprotocols and got none back.
        assert ws.subprotocol == f"bearer.{TOKEN}"
        await assert_open(ws)
    offered = ["conveyor.v1", f"bearer.{TOKEN}"]
    async with connect(ws_url(secured), subprotocols=offered) as ws:  # type: ignore[arg-type]
        assert ws.subprotocol == "conveyor.v1"  # the token is not echoed when avoidable
        accepted = await ask(ws, {"type": "submit_job", "job": ADD})
        assert accepted["type"] == "job_accepted"


def test_choose_subprotocol() -> None:
    assert choose_subprotocol([]) is None
    assert choose_subprotocol(["graphql-ws"]) is None
    assert choose_subprotocol(["Bearer.abc"]) == "Bearer.abc"
    assert choose_subprotocol(["bearer.abc", "conveyor.v1"]) == "conveyor.v1"


async def test_middleware_takes_the_token_from_a_subprotocol() -> None:
    def scope(*protocols: bytes, kind: str = "websocket") -> dict[str, Any]:
        return {
            "type": kind,
            "path": "/ws/jobs",
            "headers": [(b"sec-websocket-protocol", p) for p in protocols],
        }

    async def ran(scope: dict[str, Any]) -> bool:
        rec = Recorder()
        await BearerAuthMiddleware(rec.app, [TOKEN])(scope, rec.receive_from([]), rec.send)
        return rec.app_ran

    token = TOKEN.encode()
    assert await ran(scope(b"bearer." + token))
    assert await ran(scope(b"conveyor.v1, bearer." + token))
    assert await ran(scope(b"conveyor.v1", b"BEARER." + token))
    assert not await ran(scope(b"bearer."))
    assert not await ran(scope(b"bearer.x, bearer." + token))  # ambiguous
    assert not await ran(scope(token))
    # Plain HTTP requests never take a token from this header.
    http = scope(b"bearer." + token, kind="http")
    assert not await ran({**http, "method": "GET", "query_string": b""})


# -- slow readers, shutdown -----------------------------------------------------------------
async def test_slow_socket_gets_an_error_and_is_closed() -> None:
    conveyor = make_conveyor("memory://")
    big = "x" * 65536
    async with serving(conveyor, send_buffer=16384, queue_size=10) as live:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.connect(("127.0.0.1", live.port))
        async with connect(ws_url(live), sock=sock, max_queue=1) as ws:
            job_ids = []
            for _ in range(5):
                accepted = await ask(ws, {"type": "submit_job", "job": ADD})
                job_ids.append(accepted["jobId"])
                await receive(ws)  # job_created
            # Now stop reading while the jobs produce large events.
            for job_id in job_ids * 8:
                job = await start(live.backend, job_id)
                await finish(live.backend, job, OutcomeKind.RETRY, error={"pad": big})
            await wait_until(lambda: live.hub.subscriber_count == 0, timeout=10)
            last: dict[str, Any] = {}
            with contextlib.suppress(ConnectionClosed):
                while True:
                    last = await receive(ws, timeout=10)
            assert_ws_error(last, "SLOW_CONSUMER")
            assert ws.close_code == 1013
    await conveyor.aclose()


async def test_server_shutdown_closes_sockets() -> None:
    conveyor = make_conveyor("memory://")
    async with contextlib.AsyncExitStack() as stack:
        live = await stack.enter_async_context(serving(conveyor))
        ws = await stack.enter_async_context(connect(ws_url(live)))
        await assert_open(ws)
        live.hub.close()
        with pytest.raises(ConnectionClosed):
            await receive(ws, timeout=2)
        assert ws.close_code == 1001
    await conveyor.aclose()


async def test_disconnect_ends_the_subscription(live: Live) -> None:
    async with connect(ws_url(live)) as ws:
        await assert_open(ws)
        assert live.hub.subscriber_count == 1
    await wait_until(lambda: live.hub.subscriber_count == 0, timeout=2)


async def test_a_socket_follows_a_bounded_number_of_jobs(
    live: Live, ws: ClientConnection, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.api.routes import ws as ws_route

    monkeypatch.setattr(ws_route, "MAX_FOLLOWED_JOBS", 2)
    job_ids = [(await live.conveyor.submit("add", (1, 2))).job.id for _ in range(3)]
    for job_id in job_ids[:2]:
        assert (await ask(ws, {"type": "subscribe", "jobId": job_id}))["type"] == "subscribed"
    assert (await ask(ws, {"type": "subscribe", "jobId": job_ids[0]}))["type"] == "subscribed"
    error = assert_ws_error(
        await ask(ws, {"type": "subscribe", "jobId": job_ids[2]}), "VALIDATION_ERROR"
    )
    assert error["details"] == {"limit": 2}
    # A submission that could not be followed is refused before it is stored.
    assert_ws_error(await ask(ws, {"type": "submit_job", "job": ADD}), "VALIDATION_ERROR")
    assert len((await live.backend.list_jobs(JobFilter(), limit=100)).items) == 3
    await ask(ws, {"type": "unsubscribe", "jobId": job_ids[0]})
    assert (await ask(ws, {"type": "submit_job", "job": ADD}))["type"] == "job_accepted"
