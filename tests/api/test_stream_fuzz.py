"""Fuzzing the endless routes schemathesis cannot read to the end, on every store, over a
real server: ``GET /api/v1/events/stream`` with hostile query strings and
``Last-Event-ID`` headers (only the status and the first bytes are read), and
``WS /ws/jobs`` with hostile frames. Never a 5xx or an INTERNAL_ERROR; every error in
the error shape; the server goes on serving.

``CONVEYOR_FUZZ_EXAMPLES=N`` raises the examples per store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import quote_from_bytes

import httpx
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from websockets.sync.client import ClientConnection, connect

from conveyor import Conveyor
from conveyor.api.events import EVENT_TYPES

from .conftest import STORES, assert_error, make_conveyor, make_store_url
from .test_events import STREAM, Live, serving

EXAMPLES = int(os.environ.get("CONVEYOR_FUZZ_EXAMPLES", "60"))

pytestmark = pytest.mark.timeout(300)

fuzz_settings = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck)
)


@contextlib.contextmanager
def serving_in_a_thread(conveyor: Conveyor) -> Iterator[tuple[Live, asyncio.AbstractEventLoop]]:
    """Serve ``conveyor`` from a thread with its own event loop, so that a Hypothesis
    test (which runs synchronously) can drive it with blocking clients."""
    started = threading.Event()
    state: dict[str, Any] = {}

    async def main() -> None:
        stop = asyncio.Event()
        try:
            async with serving(conveyor) as live:
                state.update(live=live, loop=asyncio.get_running_loop(), stop=stop)
                started.set()
                await stop.wait()
        finally:
            await conveyor.aclose()

    def run() -> None:
        try:
            asyncio.run(main())
        except BaseException as exc:
            state["error"] = exc
            started.set()

    thread = threading.Thread(target=run, name="fuzzed-server")
    thread.start()
    started.wait(30)
    try:
        if "error" in state:
            raise state["error"]
        yield state["live"], state["loop"]
    finally:
        if "stop" in state:
            state["loop"].call_soon_threadsafe(state["stop"].set)
        thread.join(30)
    if "error" in state:
        raise state["error"]


@pytest.fixture(params=STORES)
def live(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Live]:
    conveyor = make_conveyor(make_store_url(request.param, tmp_path, request))
    with serving_in_a_thread(conveyor) as (server, loop):
        server.loop = loop  # type: ignore[attr-defined]
        yield server


@pytest.fixture
def http(live: Live) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live.base_url, timeout=10) as client:
        yield client


def on_server(live: Live, coroutine: Any) -> Any:
    """Run ``coroutine`` on the server's event loop (where its store lives)."""
    loop: asyncio.AbstractEventLoop = live.loop  # type: ignore[attr-defined]
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(10)


def known_ids(http: httpx.Client, live: Live) -> tuple[list[str], list[str]]:
    """Submit a few jobs; their ids and the ids of the events the store holds."""
    jobs = []
    for i in range(3):
        response = http.post("/api/v1/jobs", json={"type": "add", "parameters": [i, 1]})
        assert response.status_code == 202, response.text
        jobs.append(response.json()["jobId"])
    events = [event.id for event in on_server(live, live.backend.read_events(None, 100))]
    assert events
    return jobs, events


def eventually(predicate: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


# -- the event stream ---------------------------------------------------------------------
# What a header value may be on the wire (RFC 9110 field-value), so that the server, not
# the client library, is what sees it.
HEADER_TEXT = (
    st.text(st.characters(codec="latin-1", exclude_categories=["Cc"]), min_size=1, max_size=300)
    .map(str.strip)
    .filter(bool)
)
HUGE = st.integers(min_value=2**63 - 10, max_value=2**200).map(str)
STREAM_ID = st.tuples(st.integers(0, 2**70), st.integers(0, 2**70)).map(lambda p: f"{p[0]}-{p[1]}")
HOSTILE_ID = st.one_of(
    HEADER_TEXT, HUGE, STREAM_ID, st.sampled_from(["0", "-1", "00000", "1e9", "٣", "9" * 100])
)
TYPES = st.lists(
    st.one_of(st.sampled_from(sorted(EVENT_TYPES)), st.text(max_size=20)), max_size=5
).map(",".join)


def stream_requests(jobs: list[str], events: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """``httpx`` request keywords for the stream: real and hostile ids, filters and
    raw query strings."""
    event_id = st.one_of(st.sampled_from(events), HOSTILE_ID)
    params = st.fixed_dictionaries(
        {},
        optional={
            "jobId": st.one_of(st.sampled_from(jobs), st.text(max_size=250)),
            "type": TYPES,
            "lastEventId": st.one_of(event_id, st.text(max_size=250)),
            "unknown": st.text(max_size=10),
        },
    )
    # Bytes: httpx would encode text as ASCII; the wire takes any octet but controls.
    headers = st.fixed_dictionaries(
        {}, optional={"Last-Event-ID": event_id.map(lambda v: v.encode("utf-8"))}
    )
    raw_query = st.lists(
        st.tuples(
            st.sampled_from(["jobId", "type", "lastEventId", "x"]),
            st.binary(max_size=60),
        ),
        max_size=4,
    ).map(lambda pairs: "&".join(f"{k}={quote_from_bytes(v)}" for k, v in pairs))
    return st.one_of(
        st.fixed_dictionaries({"params": params, "headers": headers}),
        st.fixed_dictionaries({"query": raw_query, "headers": headers}),
    )


def open_stream(http: httpx.Client, request: dict[str, Any]) -> httpx.Response:
    """Open the stream; read the answer if it is an error, else only its first bytes."""
    query = request.pop("query", None)
    url = STREAM if query is None else httpx.URL(STREAM, query=query.encode())
    with http.stream("GET", url, **request) as response:
        if response.status_code != 200:
            response.read()
            return response
        assert response.headers["content-type"] == "text/event-stream"
        first = b""
        for chunk in response.iter_raw():
            first += chunk
            if len(first) >= len(b"retry: 1000\n\n"):
                break
        assert first.startswith(b"retry: 1000\n\n"), first
        return response


def test_hostile_stream_requests(live: Live, http: httpx.Client) -> None:
    jobs, events = known_ids(http, live)
    statuses: set[int] = set()

    @fuzz_settings
    @given(request=stream_requests(jobs, events))
    def one(request: dict[str, Any]) -> None:
        response = open_stream(http, request)
        statuses.add(response.status_code)
        if response.status_code != 200:
            assert response.status_code < 500, response.text
            error = assert_error(response, response.status_code)
            assert error["code"] in {"VALIDATION_ERROR", "NOT_FOUND"}, error

    one()
    assert 200 in statuses  # the fuzz reached real streams, not only refusals
    assert statuses & {404, 422}
    # Every stream the client dropped was closed on the server; it serves on.
    eventually(lambda: live.hub.subscriber_count == 0)
    assert http.get("/healthz").status_code == 200


# -- the WebSocket ------------------------------------------------------------------------
JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=10), children, max_size=4)
    ),
    max_leaves=12,
)


def messages(jobs: list[str]) -> st.SearchStrategy[dict[str, Any]]:
    """Objects that look like the socket's messages, with hostile fields."""
    job = st.one_of(
        st.fixed_dictionaries(
            {"type": st.sampled_from(["add", "anything", "nope", ""]), "parameters": JSON}
        ),
        JSON,
    )
    return st.fixed_dictionaries(
        {
            "type": st.one_of(
                st.sampled_from(["submit_job", "subscribe", "unsubscribe", "ping"]), JSON
            )
        },
        optional={
            "job": job,
            "jobId": st.one_of(st.sampled_from(jobs), JSON),
            "requestId": JSON,
        },
    )


def frames(jobs: list[str]) -> st.SearchStrategy[str | bytes]:
    """What a client may send: message-like JSON, any JSON (integers of any size, and
    ``Infinity``), any text, any bytes."""
    return st.one_of(
        messages(jobs).map(json.dumps),
        messages(jobs).map(lambda m: json.dumps(m).encode()),
        JSON.map(json.dumps),
        st.text(max_size=200),
        st.binary(max_size=200),
    )


ANSWERS = {"error", "job_accepted", "subscribed", "unsubscribed", "pong"}


def receive(ws: ClientConnection) -> dict[str, Any]:
    message: dict[str, Any] = orjson.loads(ws.recv(timeout=10))
    return message


def answers_until_pong(ws: ClientConnection, request_id: str) -> list[dict[str, Any]]:
    """The answers the socket sends before the pong to ``request_id`` (events, which
    the socket may send at any time, left out)."""
    answers: list[dict[str, Any]] = []
    while True:
        message = receive(ws)
        assert isinstance(message.get("type"), str), message
        if message == {"type": "pong", "requestId": request_id}:
            return answers
        if message["type"] in ANSWERS:
            answers.append(message)
        else:
            assert message["type"] in EVENT_TYPES, message


def assert_answer(answer: dict[str, Any]) -> None:
    if answer["type"] != "error":
        return
    error = answer["error"]
    assert set(error) == {"code", "message", "details"}, answer
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], dict)
    assert error["code"] in {"VALIDATION_ERROR", "UNKNOWN_TASK", "NOT_FOUND"}, answer


def test_hostile_frames(live: Live, http: httpx.Client) -> None:
    jobs, _ = known_ids(http, live)
    kinds: set[str] = set()
    url = f"ws://127.0.0.1:{live.port}/ws/jobs"
    with connect(url) as ws:
        counter = iter(range(10**9))

        @fuzz_settings
        @given(frame=frames(jobs))
        # Random frames are mostly bad: one good frame always runs, so the answers
        # checked below include a success whatever the draw.
        @example(frame='{"type": "ping", "requestId": 1}')
        def one(frame: str | bytes) -> None:
            ws.send(frame)  # bytes go as a binary frame
            request_id = f"fuzz-{next(counter)}"
            ws.send(orjson.dumps({"type": "ping", "requestId": request_id}).decode())
            answers = answers_until_pong(ws, request_id)
            # One answer per frame, in order: the socket read it and is still open.
            assert len(answers) == 1, answers
            assert_answer(answers[0])
            kinds.add(answers[0]["type"])

        one()
    assert "error" in kinds
    assert kinds - {"error"}, kinds  # some frames were good ones
    with connect(url) as ws:  # it serves on
        ws.send('{"type": "ping"}')
        assert receive(ws) == {"type": "pong"}
