"""Shared fixtures."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

import pytest

from conveyor import Conveyor, Settings
from conveyor.worker import Worker


@pytest.fixture
def make_app() -> Callable[..., Conveyor]:
    def factory(url: str = "memory://", **settings: object) -> Conveyor:
        return Conveyor(settings=Settings.from_env({}, url=url, **settings))

    return factory


@asynccontextmanager
async def running(worker: Worker) -> AsyncIterator[Worker]:
    """Run a worker in the background for the duration of the block, then stop it."""
    task = asyncio.create_task(worker.run())
    try:
        yield worker
    finally:
        worker.stop()
        await asyncio.wait_for(task, 30)
