"""What only the Redis store has: foreign stream entries, outages and restarts, script
cache loss, startup checks, key layout, record expiry, the cluster, a worker on Redis."""

from __future__ import annotations

import asyncio
import logging
import pickle
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest
from redis.asyncio import Redis

from conveyor import Conveyor, JobStatus
from conveyor.backends import backend_from_url
from conveyor.backends.base import JobFilter, Retention
from conveyor.backends.redis import RedisBackend, parse_redis_url
from conveyor.errors import BackendUnavailableError, ConfigurationError
from conveyor.worker import Worker
from tests.conftest import running
from tests.contract.helpers import done, enqueue, make_job
from tests.redis_server import RedisClusterServers, RedisServer, free_port, require

pytestmark = pytest.mark.timeout(60)


def _url(server: RedisServer | RedisClusterServers, prefix: str | None = None) -> str:
    sep = "&" if "?" in server.url else "?"
    return f"{server.url}{sep}prefix={prefix or 'x-' + uuid.uuid4().hex[:10]}"


@pytest.fixture
async def store(redis_server: RedisServer) -> AsyncIterator[RedisBackend]:
    backend = RedisBackend(_url(redis_server))
    await backend.open()
    try:
        yield backend
    finally:
        await backend.aclose()


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    client = Redis(port=redis_server.port)
    try:
        yield client
    finally:
        await client.aclose()


class _Canary:
    """Unpickling this would create a file: proof that nothing is unpickled."""

    path = ""

    def __reduce__(self) -> tuple[object, tuple[str, str]]:
        return (open, (self.path, "w"))


async def test_foreign_entries_are_dead_lettered_on_first_delivery(
    store: RedisBackend, raw: Redis, tmp_path: Path
) -> None:
    good = make_job()
    await enqueue(store, good)
    stream = store.keys("default").stream(0)
    canary = tmp_path / "pwned"
    _Canary.path = str(canary)
    await raw.xadd(stream, {"payload": pickle.dumps(_Canary())})
    await raw.xadd(stream, {"j": "no-such-job"})
    await raw.xadd(stream, {"a": "1", "b": "\xff\x00garbage"})

    (leased,) = await store.fetch(["default"], "w", 10, 30)
    assert leased.id == good.id
    assert await store.fetch(["default"], "w", 10, 30) == []
    assert not canary.exists()

    failed = (await store.list_jobs(JobFilter(status=JobStatus.FAILED), limit=10)).items
    assert len(failed) == 3
    for job in failed:
        assert job.error is not None
        assert job.error["details"]["reason"] == "undecodable"
        again = await store.get_job(job.id)
        assert again is not None
        assert again.status is JobStatus.FAILED
    # Nothing is left in the stream or its pending list once the good job is done.
    assert await store.complete([done(leased, "w")]) == [True]
    assert await raw.xlen(stream) == 0
    assert (await raw.xpending(stream, "conveyor"))["pending"] == 0


async def test_no_driver_error_escapes_when_the_server_is_down() -> None:
    backend = RedisBackend(f"redis://127.0.0.1:{free_port()}/0")
    try:
        with pytest.raises(BackendUnavailableError):
            await backend.ping()
        with pytest.raises(BackendUnavailableError):
            await backend.fetch(["default"], "w", 10, 30)
        with pytest.raises(BackendUnavailableError):
            await backend.enqueue([make_job()], idempotency_ttl=60)
    finally:
        await backend.aclose()


async def test_survives_a_server_kill_and_restart(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "redis").start()
    backend = RedisBackend(server.url)
    try:
        await backend.open()
        job = make_job()
        await enqueue(backend, job)
        await asyncio.sleep(1.2)  # appendfsync everysec: let the AOF reach the disk
        server.kill()
        with pytest.raises(BackendUnavailableError):
            await backend.ping()
        server.start()  # same port and directory: it replays its AOF
        # Same instance: reconnects, and reloads the scripts the restart forgot.
        (leased,) = await backend.fetch(["default"], "w", 10, 30)
        assert leased.id == job.id
        assert await backend.complete([done(leased, "w")]) == [True]
    finally:
        await backend.aclose()
        server.stop()


async def test_a_flushed_script_cache_is_reloaded(store: RedisBackend, raw: Redis) -> None:
    await raw.script_flush()
    job = make_job()
    await enqueue(store, job)
    (leased,) = await store.fetch(["default"], "w", 10, 30)
    await raw.script_flush()
    assert await store.complete([done(leased, "w")]) == [True]


async def test_open_warns_when_persistence_is_off(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "r", "--appendonly", "no",
                         "--maxmemory-policy", "allkeys-lru").start()  # fmt: skip
    backend = RedisBackend(server.url)
    try:
        with caplog.at_level(logging.WARNING, logger="conveyor.backends.redis"):
            await backend.open()
        text = caplog.text
        assert "appendonly=no" in text
        assert "allkeys-lru" in text
    finally:
        await backend.aclose()
        server.stop()


async def test_keys_share_the_prefix_and_a_hash_tag_per_queue(
    redis_server: RedisServer, raw: Redis
) -> None:
    prefix = "layout-" + uuid.uuid4().hex[:8]
    backend = RedisBackend(_url(redis_server, prefix))
    await backend.open()
    try:
        jobs = [make_job(queue="a"), make_job(queue="b", priority=3, idempotency_key="k")]
        await enqueue(backend, *jobs)
        leased = await backend.fetch(["a", "b"], "w", 10, 30)
        await backend.complete([done(j, "w") for j in leased])
        keys = sorted(k.decode() for k in await raw.keys(f"{prefix}:*"))
        assert all(k.startswith(f"{prefix}:") for k in keys)
        tagged = [k for k in keys if "{" in k]
        assert {k.split("{", 1)[1].split("}", 1)[0] for k in tagged} == {"q:a", "q:b"}
        untagged = {k.split(":")[1] for k in keys if "{" not in k}
        assert untagged <= {"queues", "job", "events", "marker"}  # no route per job
        # Finished records expire on their own; so do idempotency keys.
        for job in jobs:
            assert await raw.pttl(backend.keys(job.queue).job(job.id)) > 0
        assert await raw.pttl(backend.keys("b").idempotency("k")) > 0
    finally:
        await backend.aclose()


async def test_purge_deletes_records(redis_server: RedisServer, raw: Redis) -> None:
    clock_offset = [0.0]
    import time

    backend = RedisBackend(
        _url(redis_server),
        clock=lambda: time.time() + clock_offset[0],
        retention=Retention(result_ttl=60.0),
    )
    await backend.open()
    try:
        job = make_job()
        await enqueue(backend, job)
        (leased,) = await backend.fetch(["default"], "w", 1, 30)
        await backend.complete([done(leased, "w")])
        clock_offset[0] = 120
        assert await backend.purge() == 1
        assert not await raw.exists(backend.keys("default").job(job.id))
        assert await backend.get_job(job.id) is None
    finally:
        await backend.aclose()


def test_url_options() -> None:
    options = parse_redis_url("redis://h:1/2?cluster=1&prefix=p&result_ttl=60&health=3")
    assert (options.cluster, options.prefix, options.result_ttl) == (True, "p", 60.0)
    assert options.url == "redis://h:1/2?health=3"
    with pytest.raises(ConfigurationError):
        parse_redis_url("redis://h/0?prefix={x}")
    with pytest.raises(ConfigurationError):
        parse_redis_url("unix:///tmp/r.sock?cluster=1")
    assert parse_redis_url("redis://h:1/2").result_ttl is None


def test_result_ttl_in_the_url_must_agree_with_the_setting() -> None:
    # Older versions took the retention from the URL; it now comes from the settings,
    # the same for every process: an old URL still works while it says the same.
    url = "redis://h:1/0?result_ttl=3600"
    assert RedisBackend(url, retention=Retention(result_ttl=3600.0)).retention.result_ttl == 3600
    with pytest.raises(ConfigurationError, match="CONVEYOR_RESULT_TTL_SECONDS"):
        RedisBackend(url, retention=Retention(result_ttl=86_400.0))
    with pytest.raises(ConfigurationError):
        backend_from_url(url)  # the default retention is 24 h
    assert isinstance(backend_from_url("rediss://h:1/0"), RedisBackend)
    assert isinstance(backend_from_url("unix:///tmp/redis.sock"), RedisBackend)


def test_a_missing_redis_server_fails_naming_the_package(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("shutil.which", lambda name: None)
    monkeypatch.setattr("os.path.exists", lambda path: False)
    with pytest.raises(pytest.fail.Exception, match="apt-get install -y redis-server"):
        require()


async def test_cluster_spreads_queues_over_slots(redis_cluster: RedisClusterServers) -> None:
    backend = RedisBackend(_url(redis_cluster))
    await backend.open()
    try:
        queues = [f"q{i}" for i in range(8)]
        jobs = [make_job(queue=q, args=[i]) for i, q in enumerate(queues)]
        await enqueue(backend, *jobs)
        client = backend.client
        slots = {client.keyslot(backend.keys(q).prios) for q in queues}
        nodes = {client.get_node_from_key(backend.keys(q).prios).port for q in queues}
        assert len(slots) == len(queues)
        assert len(nodes) > 1
        leased = await backend.fetch(queues, "w", 100, 30)
        assert sorted(j.args[0] for j in leased) == list(range(8))
        assert await backend.complete([done(j, "w") for j in leased]) == [True] * 8
        stats = {s.name: s.completed for s in await backend.queue_stats()}
        assert stats == dict.fromkeys(queues, 1)
    finally:
        await backend.aclose()


async def test_a_worker_runs_jobs_on_redis(
    redis_server: RedisServer, make_app: Callable[..., Conveyor]
) -> None:
    app = make_app(_url(redis_server), lease_seconds=5)
    calls: list[int] = []

    @app.task(retries=2, backoff=0.01)
    async def flaky(n: int) -> int:
        calls.append(n)
        if n % 5 == 0 and calls.count(n) == 1:
            raise ValueError("first attempt fails")
        return n * 2

    try:
        # Opened first: Conveyor.backend() opens twice when two tasks race for it.
        await app.backend()
        async with running(Worker(app, concurrency=20)):
            handles = await flaky.enqueue_many([((i,), {}) for i in range(50)])
            results = [await h.result(timeout=20) for h in handles]
        assert results == [i * 2 for i in range(50)]
        retried = await handles[5].info()
        assert retried.attempts == 2
    finally:
        await app.aclose()
