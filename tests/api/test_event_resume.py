"""Resuming the event stream, over a real server. ``Last-Event-ID`` values a store
cannot have issued, on every store: a 422 in the error shape (never a 503, never a
500); an id past the newest event resumes "after the end", at the live feed. A replay
that fails once the stream has begun says why in a final error event: UNAVAILABLE only
when the store says so."""

from __future__ import annotations

import logging
from pathlib import Path

import httpx
import orjson
import pytest

from conveyor.backends.base import Event
from conveyor.errors import BackendUnavailableError

from . import test_events
from .conftest import STORES, assert_error, make_conveyor, make_store_url
from .test_events import STREAM, Live, SSEReader, serving, stream, submit

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every store, for test_events' ``live`` server and ``http`` client."""
    return make_store_url(request.param, tmp_path, request)


live = test_events.live
http = test_events.http


async def status_of(http: httpx.AsyncClient, **request: object) -> httpx.Response:
    """The answer's status and headers, and its body unless it is a stream (which would
    never end)."""
    async with http.stream("GET", STREAM, **request) as response:  # type: ignore[arg-type]
        if response.status_code != 200:
            await response.aread()
        return response


@pytest.mark.parametrize(
    "event_id",
    [
        "9" * 100,
        "9223372036854775808",  # one past a 64-bit row number
        "18446744073709551616-0",  # a stream id's milliseconds past 64 bits
        "1-" + "9" * 30,  # a stream id's sequence past 64 bits
    ],
)
@pytest.mark.parametrize("where", ["header", "query"])
async def test_an_id_no_store_issues_is_a_422(
    live: Live, http: httpx.AsyncClient, event_id: str, where: str
) -> None:
    request: dict[str, object] = (
        {"headers": {"Last-Event-ID": event_id}}
        if where == "header"
        else {"params": {"lastEventId": event_id}}
    )
    response = await status_of(http, **request)
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert "invalid event cursor" in error["message"]
    assert event_id not in response.text or len(event_id) <= 40  # long ids are clipped
    assert live.hub.subscriber_count == 0


#: The highest id each store can issue.
HIGHEST = {
    "memory": "9223372036854775807",
    "sqlite": "9223372036854775807",
    "redis": "18446744073709551615-18446744073709551615",
}


async def test_an_id_after_the_newest_event_resumes_at_the_live_feed(
    request: pytest.FixtureRequest, live: Live, http: httpx.AsyncClient
) -> None:
    await submit(http)  # something stored before
    store = request.node.callspec.params["store_url"]
    headers = {"Last-Event-ID": HIGHEST[store]}
    async with http.stream("GET", STREAM, headers=headers) as response:
        assert response.status_code == 200
        reader = SSEReader(response)
        first = await reader.message()
        assert first is not None
        assert first.retry == "1000"
        job_id = await submit(http)
        event = await reader.data()
    assert (event["type"], event["jobId"]) == ("job_created", job_id)


@pytest.mark.parametrize(
    ("failure", "code"),
    [
        (BackendUnavailableError("SQLite store x: database is locked"), "UNAVAILABLE"),
        (OverflowError("a bug"), "INTERNAL_ERROR"),
    ],
)
async def test_a_replay_failing_midway_ends_with_an_error_event(
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    failure: Exception,
    code: str,
) -> None:
    conveyor = make_conveyor()
    async with (
        serving(conveyor, page_size=2) as live,
        httpx.AsyncClient(base_url=live.base_url, timeout=10) as http,
    ):
        async with stream(http):  # the hub's feed starts after the events below
            for _ in range(5):
                await submit(http)
        ids = [event.id for event in await live.backend.read_events(None, 10)]
        read_events = live.backend.read_events

        async def failing(after: str | None, limit: int) -> list[Event]:
            if after == ids[2]:  # the replay's second page
                raise failure
            return await read_events(after, limit)

        monkeypatch.setattr(live.backend, "read_events", failing)
        async with stream(http, **{"Last-Event-ID": ids[0]}) as reader:
            assert [e["eventId"] for e in await reader.events(2)] == ids[1:3]
            message = await reader.message()
            assert message is not None
            assert message.event == "error"
            error = orjson.loads(message.data or "")["error"]
            assert await reader.message() is None  # the stream ended
    await conveyor.aclose()
    assert set(error) == {"code", "message", "details"}
    assert error["code"] == code
    if code == "INTERNAL_ERROR":
        assert "a bug" not in str(error)
        logged = [r for r in caplog.records if r.levelno == logging.ERROR and r.exc_info]
        assert logged
        assert logged[0].exc_info is not None
        assert logged[0].exc_info[1] is failure
    else:
        assert error["details"] == {"reason": str(failure)}
