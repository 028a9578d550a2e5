"""A Redis that comes back empty (restarted without persistence, or flushed) is noticed
by the processes using it, within seconds: an ERROR saying the store lost its data, once
per loss. A restart that kept the data is a WARNING, never that ERROR."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


@asynccontextmanager
async def _deployment(directory: Path, *args: str) -> AsyncIterator[tuple[RedisServer, Conveyor]]:
    """A server of this test's own (``args``: its options) and an app on it, with one
    task; both closed at the end."""
    server = RedisServer(directory / "redis", *args).start()
    # A prefix of its own: what this process remembers of a store is keyed by URL and
    # prefix, and an earlier test's server may have had the same port.
    url = f"{server.url}?prefix=t-{uuid.uuid4().hex[:8]}"
    app = Conveyor(settings=Settings(url=url, lease_seconds=1.0, allowed_hosts=("t",)))

    @app.task()
    async def noop(n: int) -> int:
        return n

    try:
        yield server, app
    finally:
        await app.aclose()
        server.stop()


async def _run_one(app: Conveyor) -> None:
    handle = await app.get_task("noop").enqueue(1)
    assert await handle.result(timeout=10) == 1


async def _restart_under_a_worker(
    app: Conveyor,
    server: RedisServer,
    caplog: pytest.LogCaptureFixture,
    text: str,
    level: int,
) -> float:
    """Restart ``server`` (same port and directory) under a running worker of ``app``;
    the seconds from its answering again until ``text`` was logged at ``level``."""
    async with running(Worker(app, concurrency=2)):
        await _run_one(app)
        server.stop()
        server.start()

        async def logged() -> bool:
            return bool(_said(caplog, text, level))

        took = await until(logged, f"{logging.getLevelName(level)} {text!r}")
        await _run_one(app)  # the store goes on (empty or not)
    return took


async def test_a_worker_notices_redis_restarted_without_persistence(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with _deployment(tmp_path, "--appendonly", "no") as (server, app):
        backend = await app.backend()
        took = await _restart_under_a_worker(app, server, caplog, LOST, logging.ERROR)
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


async def test_a_restart_that_kept_the_data_is_no_loss(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with _deployment(tmp_path) as (server, app):  # AOF: the data survives
        await app.backend()
        await _restart_under_a_worker(app, server, caplog, KEPT, logging.WARNING)
        assert _said(caplog, LOST, logging.ERROR) == []


async def test_the_api_notices_a_flushed_store(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger=LOGGER)
    async with (
        _deployment(tmp_path) as (server, app),
        Redis(port=server.port) as raw,
        httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(app)), base_url="http://t"
        ) as client,
    ):
        answer = await client.post("/api/v1/jobs", json={"type": "noop", "parameters": {"n": 1}})
        assert answer.status_code == 202, answer.text
        await raw.flushall()

        async def reported() -> bool:
            assert (await client.get("/readyz")).status_code == 200  # what probes call
            return bool(_said(caplog, LOST, logging.ERROR))

        await until(reported, "the ERROR saying the store lost its data")
        (message,) = _said(caplog, LOST, logging.ERROR)
        assert "flushed" in message
        assert await raw.exists(RedisBackend(app.url)._g.marker)


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
