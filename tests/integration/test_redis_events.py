"""The Redis event feed holds one entry per script call (a batch of events): cursors
point inside entries, and reading after any cursor with any limit neither skips nor
repeats an event; entries written by older versions (one event each) still read."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import orjson
import pytest
from redis.asyncio import Redis

from conveyor.backends.base import Outcome, OutcomeKind, Retention
from conveyor.backends.redis import RedisBackend
from conveyor.backends.redis._codec import event_id
from conveyor.errors import HistoryTruncatedError
from tests.contract.helpers import done, enqueue, make_job
from tests.redis_server import RedisClusterServers, RedisServer

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(params=["redis", "redis-cluster"])
async def store(
    request: pytest.FixtureRequest,
) -> AsyncIterator[RedisBackend]:
    server: RedisServer | RedisClusterServers = request.getfixturevalue(
        "redis_server" if request.param == "redis" else "redis_cluster"
    )
    sep = "&" if "?" in server.url else "?"
    backend = RedisBackend(f"{server.url}{sep}prefix=ev-{uuid.uuid4().hex[:10]}")
    await backend.open()
    try:
        yield backend
    finally:
        await backend.aclose()


async def _all_ids(store: RedisBackend) -> list[str]:
    return [e.id for e in await store.read_events(None, 100_000)]


async def test_pages_of_any_size_cover_the_feed_once(store: RedisBackend) -> None:
    a = [make_job(queue="a") for _ in range(23)]
    b = [make_job(queue="b") for _ in range(17)]
    await enqueue(store, *a, *b)
    running = await store.fetch(["a", "b"], "w1", 40, 30.0)
    assert len(running) == 40
    assert all(await store.complete([done(job, "w1") for job in running]))

    ids = await _all_ids(store)
    assert len(ids) == 40 * 3
    assert len(set(ids)) == len(ids)
    assert ids == sorted(ids)
    for limit in (1, 4, 7, 40, 1000):
        after: str | None = None
        paged: list[str] = []
        while page := await store.read_events(after, limit):
            assert len(page) <= limit
            paged += [e.id for e in page]
            after = page[-1].id
        assert paged == ids, limit
    for i in (0, 1, 5, 22, 39, 40, 77, len(ids) - 1):
        assert [e.id for e in await store.read_events(ids[i], 1000)] == ids[i + 1 :]
        assert [e.id for e in await store.read_events(ids[i], 3)] == ids[i + 1 : i + 4]


async def test_one_feed_entry_per_script_call(redis_server: RedisServer) -> None:
    prefix = "ev-" + uuid.uuid4().hex[:10]
    store = RedisBackend(f"{redis_server.url}?prefix={prefix}")
    await store.open()
    raw = Redis(port=redis_server.port, decode_responses=True)
    try:
        jobs = [make_job() for _ in range(50)]
        await enqueue(store, *jobs)
        assert await raw.xlen(f"{prefix}:events") == 1
        events = await store.read_events(None, 100)
        assert [e.job_id for e in events] == [j.id for j in jobs]
        assert {e.type for e in events} == {"job_created"}
        assert events[0].data == {"queue": "default", "taskType": "task"}
    finally:
        await raw.aclose()
        await store.aclose()


async def test_entries_of_older_versions_still_read(redis_server: RedisServer) -> None:
    prefix = "ev-" + uuid.uuid4().hex[:10]
    store = RedisBackend(f"{redis_server.url}?prefix={prefix}")
    await store.open()
    raw = Redis(port=redis_server.port, decode_responses=True)
    try:
        await raw.xadd(
            f"{prefix}:events",
            {"t": "job_progress", "j": "old", "a": "12.5", "d": '{"progress":3}'},
        )
        await enqueue(store, make_job(), make_job())
        old, *new = await store.read_events(None, 100)
        assert (old.type, old.job_id, old.at, old.data) == (
            "job_progress",
            "old",
            12.5,
            {"progress": 3},
        )
        assert "." not in old.id
        assert len(new) == 2
        assert [e.id for e in await store.read_events(old.id, 100)] == [e.id for e in new]
        assert [e.id for e in await store.read_events(new[0].id, 100)] == [new[1].id]
    finally:
        await raw.aclose()
        await store.aclose()


@pytest.mark.parametrize("fenced_by", ["token", "record"])
async def test_outcome_events_are_the_same_whichever_way_the_outcome_is_fenced(
    store: RedisBackend, fenced_by: str
) -> None:
    jobs = [make_job(type=f"t{i}", queue="o") for i in range(4)]
    await enqueue(store, *jobs)
    leased = {j.id: j for j in await store.fetch(["o"], "w1", 4, 30.0)}
    if fenced_by == "record":
        store._held.clear()  # as if another process had fetched them
    err = {"code": "TASK_FAILED", "message": "boom"}
    a, b, c, d = (leased[j.id] for j in jobs)
    outcomes = [
        Outcome(a.id, "w1", 1, OutcomeKind.COMPLETED, result={"n": 1}),
        Outcome(b.id, "w1", 1, OutcomeKind.FAILED, error=err),
        Outcome(c.id, "w1", 1, OutcomeKind.RETRY, error=err, retry_at=None),
        Outcome(d.id, "w1", 1, OutcomeKind.RELEASED),
    ]
    assert await store.complete(outcomes) == [True] * 4
    events = [e for e in await store.read_events(None, 1000) if e.data.get("queue") == "o"]
    ended = [(e.type, e.job_id, e.data) for e in events if e.type != "job_created"]
    head = {"attempt": 1, "queue": "o"}
    assert ended == [
        ("job_completed", a.id, {**head, "taskType": "t0", "result": {"n": 1}}),
        ("job_failed", b.id, {**head, "taskType": "t1", "error": err}),
        ("job_retrying", c.id, {**head, "taskType": "t2", "error": err, "runAt": None}),
        ("job_released", d.id, {**head, "taskType": "t3"}),
    ]
    retried, released = await store.get_job(c.id), await store.get_job(d.id)
    assert retried is not None
    assert released is not None
    assert (retried.status, retried.attempts, retried.error) == ("pending", 1, err)
    assert (released.status, released.attempts) == ("pending", 0)


@pytest.mark.parametrize("fenced_by", ["token", "record"])
async def test_a_large_result_is_left_out_of_its_event_whichever_way_it_is_fenced(
    store: RedisBackend, fenced_by: str
) -> None:
    large, small = {"rows": ["x" * 100] * 100}, {"n": 1}
    jobs = [make_job(type="t", queue="big") for _ in range(2)]
    await enqueue(store, *jobs)
    a, b = (await store.fetch(["big"], "w1", 2, 30.0))[:2]
    if fenced_by == "record":
        store._held.clear()  # as if another process had fetched them
    outcomes = [done(a, "w1", result=large), done(b, "w1", result=small)]
    assert await store.complete(outcomes) == [True, True]
    events = {e.job_id: e for e in await store.read_events(None, 1000) if e.type == "job_completed"}
    head = {"attempt": 1, "queue": "big", "taskType": "t"}
    size = len(orjson.dumps(large))
    assert events[a.id].data == {**head, "resultOmitted": True, "resultBytes": size}
    assert events[b.id].data == {**head, "result": small}
    raw = await store.client.xrange(store.keys("big").events)
    assert max(len(value) for _, fields in raw for value in fields.values()) < 1000
    record = await store.get_job(a.id)
    assert record is not None
    assert record.result == large


class Clock:
    """A store clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def clocked(redis_server: RedisServer) -> AsyncIterator[tuple[RedisBackend, Clock]]:
    """A store of its own on a hand-moved clock, keeping events ten seconds."""
    clock = Clock()
    url = f"{redis_server.url}?prefix=ev-{uuid.uuid4().hex[:10]}"
    store = RedisBackend(url, clock=clock, retention=Retention(events=10))
    await store.open()
    try:
        yield store, clock
    finally:
        await store.aclose()


async def test_a_cursor_this_feed_never_issued_is_judged_by_where_it_sits(
    clocked: tuple[RedisBackend, Clock],
) -> None:
    store, clock = clocked
    await enqueue(store, make_job())
    clock.now += 20
    await enqueue(store, make_job())
    clock.now += 1
    await enqueue(store, make_job())
    await store.purge()
    kept = await store.read_events(None, 100)
    assert len(kept) == 2
    # Between the two entries held: nothing after it was trimmed.
    between = event_id(f"{int((clock.now - 0.5) * 1000)}-0", None, 0)
    assert [e.id for e in await store.read_events(between, 100)] == [kept[1].id]
    # Before the oldest held, with a trimmed entry after it: told.
    before = event_id(f"{int((clock.now - 30) * 1000)}-0", None, 0)
    with pytest.raises(HistoryTruncatedError) as gap:
        await store.read_events(before, 100)
    assert gap.value.oldest == kept[0].id
    # Between the trimmed entry and the oldest held: nothing it lacks went.
    after_trimmed = event_id(f"{int((clock.now - 10) * 1000)}-0", None, 0)
    assert len(await store.read_events(after_trimmed, 100)) == 2


async def test_everything_trimmed_and_nothing_new(clocked: tuple[RedisBackend, Clock]) -> None:
    store, clock = clocked
    await enqueue(store, make_job(), make_job())
    first, last = (e.id for e in await store.read_events(None, 100))
    clock.now += 60
    await store.purge()
    assert await store.read_events(None, 100) == []
    assert await store.read_events(last, 100) == []  # it had everything
    with pytest.raises(HistoryTruncatedError) as gap:
        await store.read_events(first, 100)
    assert gap.value.oldest is None


async def test_entries_of_older_versions_make_a_cursor_behind_them_truncated(
    redis_server: RedisServer,
) -> None:
    # Written before entries named their predecessor: when in doubt, the reader is told.
    prefix = "ev-" + uuid.uuid4().hex[:10]
    store = RedisBackend(f"{redis_server.url}?prefix={prefix}")
    await store.open()
    raw = Redis(port=redis_server.port, decode_responses=True)
    try:
        feed = f"{prefix}:events"
        await raw.xadd(feed, {"t": "job_created", "j": "a", "a": "1", "d": "{}"}, id="1000-0")
        await raw.xadd(feed, {"t": "job_created", "j": "b", "a": "2", "d": "{}"}, id="2000-0")
        await raw.xtrim(feed, minid="2000-0", approximate=False)
        with pytest.raises(HistoryTruncatedError):
            await store.read_events(event_id("500-0"), 100)
        new = make_job()
        await enqueue(store, new)  # its `p` is '?': the feed held entries of older versions
        assert [e.job_id for e in await store.read_events(event_id("2000-0"), 100)] == [new.id]
        await raw.xtrim(feed, minid="2001-0", approximate=False)  # "b" goes too
        with pytest.raises(HistoryTruncatedError):  # what was between "b" and the new one?
            await store.read_events(event_id("2000-0"), 100)
    finally:
        await raw.aclose()
        await store.aclose()
