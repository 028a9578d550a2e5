"""Upkeep of the Redis store without per-job deletes: work streams are trimmed in one
XTRIM MINID per batch, never past an entry that is still needed (delivered and not
acknowledged - running, or reclaimed after its lease expired - or not delivered yet), on
every priority level; purge finds expired jobs by scanning the finished indexes oldest
id first."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from conveyor.backends.redis import RedisBackend, _records
from tests.contract.helpers import done, enqueue, make_job
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis(port=redis_server.port, decode_responses=True)
    try:
        yield client
    finally:
        await client.aclose()


async def _entries(raw: Redis, stream: str) -> set[str]:
    return {fields["j"] for _, fields in await raw.xrange(stream)}


async def test_unacknowledged_and_undelivered_entries_survive_trimming(
    redis_server: RedisServer, raw: Redis
) -> None:
    clock = _Clock()
    prefix = "t-" + uuid.uuid4().hex[:10]
    store = RedisBackend(f"{redis_server.url}?prefix={prefix}", clock=clock)
    await store.open()
    try:
        low = [make_job(priority=0) for _ in range(4)]
        high = [make_job(priority=5) for _ in range(3)]
        await enqueue(store, *low, *high)
        s0, s5 = f"{prefix}:{{q:default}}:s:0", f"{prefix}:{{q:default}}:s:5"

        # The oldest high job runs with a short lease, which expires: reclaimed, its
        # entry stays in the pending list (the same entry, not a new one).
        (a,) = await store.fetch(["default"], "w1", 1, 1.0)
        assert a.id == high[0].id
        clock.now += 5
        (again,) = await store.fetch(["default"], "w2", 1, 30.0)
        assert (again.id, again.attempts) == (a.id, 2)
        # Two more leased: the other high job and the oldest low one.
        b, c = await store.fetch(["default"], "w2", 2, 30.0)
        assert (b.id, c.id) == (high[1].id, high[2].id)
        (d,) = await store.fetch(["default"], "w2", 1, 30.0)
        assert d.id == low[0].id

        # Finishing the younger ones trims nothing the reclaimed job or the waiting
        # low jobs need.
        assert await store.complete([done(b, "w2"), done(c, "w2"), done(d, "w2")]) == [True] * 3
        assert a.id in await _entries(raw, s5)
        assert await _entries(raw, s0) == {j.id for j in low[1:]}
        assert (await raw.xpending(s5, "conveyor"))["pending"] == 1

        # The reclaimed job finishes: its stream holds nothing any more.
        assert await store.complete([done(again, "w2")]) == [True]
        assert await raw.xlen(s5) == 0
        assert await _entries(raw, s0) == {j.id for j in low[1:]}

        # The rest are delivered and finished in two batches, oldest still running.
        e, f = await store.fetch(["default"], "w2", 2, 30.0)
        assert await store.complete([done(f, "w2")]) == [True]
        assert e.id in await _entries(raw, s0)
        (g,) = await store.fetch(["default"], "w2", 1, 30.0)
        assert await _entries(raw, s0) >= {e.id, g.id}
        assert await store.complete([done(e, "w2"), done(g, "w2")]) == [True, True]
        assert await raw.xlen(s0) == 0
        assert (await raw.xpending(s0, "conveyor"))["pending"] == 0
    finally:
        await store.aclose()


async def test_purge_scans_past_recently_finished_old_jobs(
    redis_server: RedisServer, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_records, "PURGE_CAP", 1)  # one id per index and round
    clock = _Clock()
    prefix = "p-" + uuid.uuid4().hex[:10]
    store = RedisBackend(f"{redis_server.url}?prefix={prefix}", clock=clock)
    await store.open()
    base = f"{prefix}:{{q:default}}:"
    try:
        old, young, gone = make_job(), make_job(), make_job()
        await enqueue(store, old, young, gone)
        a, b, c = await store.fetch(["default"], "w", 3, 600.0)
        assert await store.complete([done(b, "w"), done(c, "w")]) == [True, True]
        await raw.delete(base + "job:" + gone.id)  # as if its record's TTL ran out
        await raw.zadd(base + "done", {"legacy": 1.0})  # left by an older version
        clock.now += 100
        assert await store.complete([done(a, "w")]) == [True]

        # The oldest id finished just now: kept, and the scan goes on past it.
        assert await store.purge(result_ttl=60) == 1
        assert await store.get_job(young.id) is None
        assert await store.get_job(old.id) is not None
        assert await raw.zrange(base + "i:completed", 0, -1) == [old.id]
        assert await raw.exists(base + "done", f"{prefix}:jobq:{gone.id}") == 0

        clock.now += 61
        assert await store.purge(result_ttl=60) == 1
        assert await raw.zcard(base + "i:completed") == 0
    finally:
        await store.aclose()
