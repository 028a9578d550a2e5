"""Conveyor on Redis: ``conveyor worker`` (one process, asyncio), ``enqueue_many`` batches.

Conveyor keeps every job's record, status and result (retained for the result TTL), so it
does the same store work whether or not anyone reads the result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from bench.peers.counter import record
from bench.peers.systems.base import (
    IO_SLEEP,
    NOOP_CONCURRENCY,
    AsyncAdapter,
    Call,
    WorkerSpec,
    redis_url,
    venv_bin,
)

from conveyor import Conveyor, Settings

app = Conveyor(settings=Settings.from_env({}, url=redis_url()))


@app.task(retries=0)
async def noop(number: int, enqueued_ns: int) -> None:
    """Counts itself and returns."""
    record(number, enqueued_ns, time.time_ns())


@app.task(retries=0)
async def io(number: int, enqueued_ns: int) -> None:
    """Waits 10 ms like a network call, then counts itself."""
    started = time.time_ns()
    await asyncio.sleep(IO_SLEEP)
    record(number, enqueued_ns, started)


class ConveyorAdapter(AsyncAdapter):
    name = "conveyor"
    bulk = "Task.enqueue_many (one round trip, one Lua script call per batch)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        concurrency = concurrency or NOOP_CONCURRENCY
        argv = [venv_bin("conveyor"), "--log-level", "error", "worker", f"{__name__}:app"]
        argv += ["--url", redis_url(), "--concurrency", str(concurrency), "--no-scheduler"]
        config = f"conveyor worker --concurrency {concurrency}"
        if processes > 1:
            argv += ["--processes", str(processes)]
            config += f" --processes {processes}"
        return WorkerSpec(argv, config=config)

    async def close(self) -> None:
        await app.aclose()

    async def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        task = noop if kind == "noop" else io
        await task.enqueue_many([(call, {}) for call in calls])

    async def enqueue_one(self, kind: str, call: Call) -> None:
        await (noop if kind == "noop" else io).enqueue(*call)


ADAPTER = ConveyorAdapter()
