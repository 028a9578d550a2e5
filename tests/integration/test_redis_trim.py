"""Upkeep of the Redis store without per-job deletes: work streams are read with NOACK
and trimmed past what each read delivered (one XTRIM MINID), so they hold exactly the
entries not delivered yet, on every priority level, and the pending list stays empty;
leases are held per fetch; purge finds expired jobs by scanning the finished indexes
oldest id first."""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from conveyor.backends.base import Retention
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


@pytest.fixture
def clock() -> _Clock:
    return _Clock()


@pytest.fixture
async def store(redis_server: RedisServer, clock: _Clock) -> AsyncIterator[RedisBackend]:
    """A store of its own (a fresh key prefix) on the store clock ``clock``."""
    prefix = "t-" + uuid.uuid4().hex[:10]
    retention = Retention(result_ttl=60.0)
    backend = RedisBackend(f"{redis_server.url}?prefix={prefix}", clock=clock, retention=retention)
    await backend.open()
    try:
        yield backend
    finally:
        await backend.aclose()


async def _entries(raw: Redis, stream: str) -> set[str]:
    return {fields["j"] for _, fields in await raw.xrange(stream)}


async def test_streams_hold_exactly_the_undelivered_entries(
    store: RedisBackend, clock: _Clock, raw: Redis
) -> None:
    prefix = store.options.prefix
    low = [make_job(priority=0) for _ in range(4)]
    high = [make_job(priority=5) for _ in range(3)]
    await enqueue(store, *low, *high)
    s0, s5 = f"{prefix}:{{q:default}}:s:0", f"{prefix}:{{q:default}}:s:5"

    # The oldest high job runs with a short lease: its entry goes with the read.
    (a,) = await store.fetch(["default"], "w1", 1, 1.0)
    assert a.id == high[0].id
    assert await _entries(raw, s5) == {j.id for j in high[1:]}
    assert await _entries(raw, s0) == {j.id for j in low}

    # Its lease expires: reclaimed from the lease, no stream entry needed.
    clock.now += 5
    (again,) = await store.fetch(["default"], "w2", 1, 30.0)
    assert (again.id, again.attempts) == (a.id, 2)
    b, c = await store.fetch(["default"], "w2", 2, 30.0)
    assert (b.id, c.id) == (high[1].id, high[2].id)
    assert await raw.xlen(s5) == 0
    (d,) = await store.fetch(["default"], "w2", 1, 30.0)
    assert d.id == low[0].id
    assert await _entries(raw, s0) == {j.id for j in low[1:]}

    # Outcomes change nothing in the streams; the stale worker is fenced.
    assert await store.complete([done(a, "w1")]) == [False]
    assert await store.complete([done(again, "w2"), done(b, "w2"), done(c, "w2")]) == [True] * 3
    assert await store.complete([done(d, "w2")]) == [True]
    assert await _entries(raw, s0) == {j.id for j in low[1:]}
    rest = await store.fetch(["default"], "w2", 10, 30.0)
    assert [j.id for j in rest] == [j.id for j in low[1:]]
    assert await raw.xlen(s0) == 0
    for stream in (s0, s5):
        assert (await raw.xpending(stream, "conveyor"))["pending"] == 0


async def test_expired_fetch_lease_beyond_the_reclaim_share_goes_back_to_its_stream(
    store: RedisBackend, clock: _Clock, raw: Redis
) -> None:
    leases = store.keys("default").leases
    jobs = [make_job() for _ in range(5)]
    await enqueue(store, *jobs)
    first = await store.fetch(["default"], "w1", 5, 1.0)
    assert len(first) == 5
    (token,) = await raw.zrange(leases, 0, -1)  # one lease for the whole fetch
    assert await raw.scard(store.keys("default").lease_set(token)) == 5

    # The worker died. Another with two free slots takes two; the other three are
    # pending again, in their stream, and counted as such.
    clock.now += 5
    two = await store.fetch(["default"], "w2", 2, 30.0)
    assert [(j.attempts, j.lease_owner) for j in two] == [(2, "w2")] * 2
    assert await raw.exists(store.keys("default").lease_set(token)) == 0
    (stats,) = await store.queue_stats()
    assert (stats.pending, stats.running) == (3, 2)
    rest = await store.fetch(["default"], "w3", 10, 30.0)
    assert sorted(j.id for j in two + rest) == sorted(j.id for j in jobs)
    assert [j.attempts for j in rest] == [2, 2, 2]

    # w1's outcomes are refused; the new holders' are applied.
    assert await store.complete([done(j, "w1") for j in first]) == [False] * 5
    outcomes = [done(j, "w2") for j in two] + [done(j, "w3") for j in rest]
    assert await store.complete(outcomes) == [True] * 5
    assert await raw.zcard(leases) == 0


async def test_purge_scans_past_recently_finished_old_jobs(
    store: RedisBackend, clock: _Clock, raw: Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_records, "PURGE_CAP", 1)  # one id per index and round
    base = f"{store.options.prefix}:{{q:default}}:"
    old, young, gone = make_job(), make_job(), make_job()
    await enqueue(store, old, young, gone)
    a, b, c = await store.fetch(["default"], "w", 3, 600.0)
    assert await store.complete([done(b, "w"), done(c, "w")]) == [True, True]
    await raw.delete(store.keys("default").job(gone.id))  # as if its TTL ran out
    await raw.zadd(base + "done", {"legacy": 1.0})  # left by an older version
    clock.now += 100
    assert await store.complete([done(a, "w")]) == [True]

    # The oldest id finished just now: kept, and the scan goes on past it.
    assert await store.purge() == 1
    assert await store.get_job(young.id) is None
    assert await store.get_job(old.id) is not None
    assert await raw.zrange(base + "i:completed", 0, -1) == [old.id]
    assert await raw.exists(base + "done") == 0

    clock.now += 61
    assert await store.purge() == 1
    assert await raw.zcard(base + "i:completed") == 0
