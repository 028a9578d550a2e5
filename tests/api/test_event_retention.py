"""Resuming from the event feed after mixed batch sizes, and after history was trimmed:
SSE (``Last-Event-ID``) and the JSON catch-up read, on every store that persists (and
``memory://``), against a real uvicorn server."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Conveyor
from conveyor.api.events import CloseReason, EventHub, SubscriptionClosed
from conveyor.backends.base import Backend

from .conftest import assert_error
from .test_events import SSEReader, make_conveyor, serving, stream

pytestmark = pytest.mark.timeout(60)

EVENTS = "/api/v1/events"


@pytest.fixture(params=["memory", "sqlite", "redis", "redis-cluster"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/events.db"
    server = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "redis_cluster"
    )
    sep = "&" if "?" in server.url else "?"
    return f"{server.url}{sep}prefix=ret-{uuid.uuid4().hex[:10]}"


@pytest.fixture
async def short_lived(store_url: str) -> AsyncIterator[tuple[Conveyor, Backend]]:
    """An app whose store keeps events one second."""
    conveyor = make_conveyor(store_url, event_retention_seconds=1.0)
    try:
        yield conveyor, await conveyor.backend()
    finally:
        await conveyor.aclose()


async def created_ids(reader: SSEReader, last_job: str) -> list[str]:
    """The job ids of the ``job_created`` events read up to ``last_job``'s."""
    ids: list[str] = []
    while not ids or ids[-1] != last_job:
        event = await reader.data(timeout=10)
        if event["type"] == "job_created":
            ids.append(event["jobId"])
    return ids


async def test_resume_after_single_submits_then_a_bulk_skips_nothing(store_url: str) -> None:
    conveyor = make_conveyor(store_url)
    # A buffer that holds the bulk: the live feed may bring all of it while the replay
    # runs (what a smaller buffer does then is another test's subject).
    async with (
        serving(conveyor, queue_size=5000) as live,
        httpx.AsyncClient(base_url=live.base_url, timeout=10) as http,
    ):
        async with stream(http) as reader:
            first = (await conveyor.submit("add", (0, 0))).job.id
            event = await reader.data()
            assert event["jobId"] == first
        resume_after = event["eventId"]
        # While the client is away: many single submits (one feed entry each), then one
        # bulk (one entry of a thousand events).
        singles = [(await conveyor.submit("add", (i, i))).job.id for i in range(300)]
        add = conveyor.get_task("add")
        bulk = [h.id for h in await add.enqueue_many([((i, 1), {}) for i in range(1000)])]
        async with stream(http, **{"Last-Event-ID": resume_after}) as reader:
            received = await created_ids(reader, bulk[-1])
        assert received == singles + bulk
    await conveyor.aclose()


async def submit_aged(conveyor: Conveyor, backend: Backend) -> tuple[str, str]:
    """Two events a retention apart, the first trimmed: (its id, the kept one's id)."""
    await conveyor.submit("add", (1, 1))
    await conveyor.submit("add", (2, 2))
    old, middle = (e.id for e in await backend.read_events(None, 100))
    await asyncio.sleep(1.2)  # the store's own clock must pass the 1 s retention
    await conveyor.submit("add", (3, 3))
    await backend.purge()
    (kept,) = await backend.read_events(None, 100)
    assert kept.id > middle
    return old, kept.id


@dataclass
class Aged:
    """A served app whose feed lost its first events: ids of one of them and of the
    oldest event kept."""

    conveyor: Conveyor
    http: httpx.AsyncClient
    old: str
    kept: str


@pytest.fixture
async def aged(short_lived: tuple[Conveyor, Backend]) -> AsyncIterator[Aged]:
    conveyor, backend = short_lived
    old, kept = await submit_aged(conveyor, backend)
    async with (
        serving(conveyor) as live,
        httpx.AsyncClient(base_url=live.base_url, timeout=10) as http,
    ):
        yield Aged(conveyor, http, old, kept)


async def test_sse_resume_from_trimmed_history_says_so_then_goes_on(aged: Aged) -> None:
    conveyor, http, old, kept = aged.conveyor, aged.http, aged.old, aged.kept
    async with stream(http, **{"Last-Event-ID": old}) as reader:
        notice = await reader.message()
        assert notice is not None
        assert (notice.event, notice.id) == ("history_truncated", None)
        body: dict[str, Any] = notice.json()
        assert (body["lastEventId"], body["oldestEventId"]) == (old, kept)
        assert body["lost"] in (None, 1)
        assert (await reader.data())["eventId"] == kept
        later = (await conveyor.submit("add", (4, 4))).job.id
        assert (await reader.data())["jobId"] == later


async def test_catchup_read_answers_410_behind_the_feed(aged: Aged) -> None:
    http, old, kept = aged.http, aged.old, aged.kept
    error = assert_error(await http.get(EVENTS, params={"after": old}), 410)
    assert error["code"] == "HISTORY_TRUNCATED"
    assert error["details"]["lastEventId"] == old
    assert error["details"]["oldestEventId"] == kept
    for params in ({"after": old, "allowGap": "true"}, {}):
        page = (await http.get(EVENTS, params=params)).json()
        assert [e["eventId"] for e in page["items"]] == [kept]
        assert page["items"][0]["type"] == "job_created"
        assert page["nextCursor"] == kept
    assert (await http.get(EVENTS, params={"after": kept})).json() == {
        "items": [],
        "nextCursor": kept,
    }


async def test_catchup_read_pages_through_the_feed(store_url: str) -> None:
    conveyor = make_conveyor(store_url)
    async with (
        serving(conveyor) as live,
        httpx.AsyncClient(base_url=live.base_url, timeout=10) as http,
    ):
        jobs = [(await conveyor.submit("add", (i, i))).job.id for i in range(7)]
        seen: list[str] = []
        after: str | None = None
        while True:
            params = {"limit": "3"} | ({"after": after} if after else {})
            response = await http.get(EVENTS, params=params)
            assert response.status_code == 200, response.text
            page = response.json()
            if not page["items"]:
                break
            seen += [e["jobId"] for e in page["items"]]
            after = page["nextCursor"]
        assert seen == jobs
        for bad in ({"limit": "0"}, {"limit": "1001"}, {"after": "not an id"}):
            assert_error(await http.get(EVENTS, params=bad), 422, "VALIDATION_ERROR")
    await conveyor.aclose()


async def test_a_hub_behind_the_retained_feed_ends_its_streams_and_reads_on(
    short_lived: tuple[Conveyor, Backend], caplog: pytest.LogCaptureFixture
) -> None:
    # An API process stalled for longer than the retention: its streams end as too slow,
    # so that each client reconnects with its own last id and is told what it missed.
    conveyor, backend = short_lived
    old, kept = await submit_aged(conveyor, backend)
    hub = EventHub(conveyor)
    subscription = await hub.subscribe()
    try:
        hub._cursor = old
        events = await hub._read(backend)
        assert [e.id for e in events] == [kept]
        assert subscription.closed
        with pytest.raises(SubscriptionClosed) as closed:
            await subscription.next(0)
        assert closed.value.reason is CloseReason.SLOW
        assert any(r.levelname == "ERROR" for r in caplog.records)
    finally:
        await hub.aclose()
