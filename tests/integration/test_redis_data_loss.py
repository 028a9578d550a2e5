"""A Redis that comes back empty (restarted without persistence, or flushed) is noticed
by the processes using it, within seconds: an ERROR saying the store lost its data, once
per loss. A restart that kept the data is a WARNING, never that ERROR."""

from __future__ import annotations

import logging
import uuid
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from conveyor import Conveyor, Settings
from conveyor.api import create_app
from conveyor.backends.redis import RedisBackend
from conveyor.worker import Worker
from tests.conftest import running
from tests.integration.helpers import until
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(60)

LOGGER = "conveyor.backends.redis"
LOST = "lost its data"
KEPT = "kept its data"


def _said(caplog: pytest.LogCaptureFixture, text: str, level: int) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name == LOGGER and r.levelno == level and text in r.getMessage()
    ]


def _app(server: RedisServer) -> Conveyor:
    app = Conveyor(settings=Settings(url=server.url, lease_seconds=1.0, allowed_hosts=("t",)))

    @app.task()
    async def noop(n: int) -> int:
        return n

    return app


async def _run_one(app: Conveyor) -> None:
    handle = await app.get_task("noop").enqueue(1)
    assert await handle.result(timeout=10) == 1


async def test_a_worker_notices_redis_restarted_without_persistence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis", "--appendonly", "no").start()
    app = _app(server)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    try:
        backend = await app.backend()
        async with running(Worker(app, concurrency=2)):
            await _run_one(app)
            server.stop()
            server.start()  # same port, nothing kept

            async def reported() -> bool:
                return bool(_said(caplog, LOST, logging.ERROR))

            took = await until(reported, "the ERROR saying the store lost its data")
            await _run_one(app)  # the store goes on, empty
        (message,) = _said(caplog, LOST, logging.ERROR)
        assert server.url in message
        assert "restarted without persistence?" in message
        assert "jobs acknowledged before" in message
        # Once per loss: the marker is back, and later checks see it.
        assert isinstance(backend, RedisBackend)
        for _ in range(2):
            await backend._watch.check(backend.client)
        assert len(_said(caplog, LOST, logging.ERROR)) == 1
        print(f"\n[data loss] the worker logged the loss {took:.2f}s after Redis answered")
    finally:
        await app.aclose()
        server.stop()


async def test_a_restart_that_kept_the_data_is_no_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis").start()  # AOF: the data survives
    app = _app(server)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    try:
        await app.backend()
        async with running(Worker(app, concurrency=2)):
            await _run_one(app)
            server.stop()
            server.start()

            async def warned() -> bool:
                return bool(_said(caplog, KEPT, logging.WARNING))

            await until(warned, "the WARNING about the restart")
            await _run_one(app)
        assert _said(caplog, LOST, logging.ERROR) == []
    finally:
        await app.aclose()
        server.stop()


async def test_the_api_notices_a_flushed_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    server = RedisServer(tmp_path / "redis").start()
    app = _app(server)
    raw = Redis(port=server.port)
    transport = httpx.ASGITransport(app=create_app(app))
    client = httpx.AsyncClient(transport=transport, base_url="http://t")
    caplog.set_level(logging.WARNING, logger=LOGGER)
    try:
        answer = await client.post("/api/v1/jobs", json={"type": "noop", "parameters": {"n": 1}})
        assert answer.status_code == 202, answer.text
        await raw.flushall()

        async def reported() -> bool:
            assert (await client.get("/readyz")).status_code == 200  # what probes call
            return bool(_said(caplog, LOST, logging.ERROR))

        await until(reported, "the ERROR saying the store lost its data")
        (message,) = _said(caplog, LOST, logging.ERROR)
        assert "flushed" in message
        assert await raw.exists(RedisBackend(server.url)._g.marker)
    finally:
        await client.aclose()
        await app.aclose()
        await raw.aclose()
        server.stop()


async def test_one_error_per_loss_whoever_writes_the_new_marker(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    backend = RedisBackend(f"{redis_server.url}?prefix=loss-{uuid.uuid4().hex[:8]}")
    raw = Redis(port=redis_server.port, decode_responses=True)
    caplog.set_level(logging.WARNING, logger=LOGGER)
    try:
        await backend.open()
        key = backend._g.marker
        first = await raw.get(key)
        assert first is not None
        await backend._watch.check(backend.client)
        assert _said(caplog, LOST, logging.ERROR) == []

        await raw.delete(key)  # lost; this process writes the new marker
        for _ in range(2):
            await backend._watch.check(backend.client)
        assert len(_said(caplog, LOST, logging.ERROR)) == 1
        second = await raw.get(key)
        assert second not in (None, first)

        await raw.set(key, "written by another process after a loss")
        for _ in range(2):
            await backend._watch.check(backend.client)
        assert len(_said(caplog, LOST, logging.ERROR)) == 2
        assert await raw.get(key) == "written by another process after a loss"
    finally:
        await backend.aclose()
        await raw.aclose()
