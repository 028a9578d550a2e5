"""Taskiq with taskiq-redis's ``RedisStreamBroker`` (consumer groups, acknowledgements),
no result backend; ``taskiq worker --workers 1 --max-async-tasks`` at the workload's
concurrency.

The consumer group starts at the stream's beginning (``consumer_id="0"``) so that jobs
queued before the worker's first start are read; the default ``$`` would skip them.
``taskiq worker`` is a supervisor that starts one worker process; memory is reported for
both. Taskiq has no bulk enqueue: a batch is ``kiq`` calls, 32 in flight at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from bench.peers.counter import record
from bench.peers.systems.base import (
    GATHER,
    IO_SLEEP,
    NOOP_CONCURRENCY,
    AsyncAdapter,
    Call,
    WorkerSpec,
    redis_url,
    venv_bin,
)
from taskiq_redis import RedisStreamBroker

broker = RedisStreamBroker(redis_url(), consumer_id="0")


@broker.task(task_name="noop")
async def noop(number: int, enqueued_ns: int) -> None:
    """Counts itself and returns."""
    record(number, enqueued_ns, time.time_ns())


@broker.task(task_name="io")
async def io(number: int, enqueued_ns: int) -> None:
    """Waits 10 ms like a network call, then counts itself."""
    started = time.time_ns()
    await asyncio.sleep(IO_SLEEP)
    record(number, enqueued_ns, started)


class TaskiqAdapter(AsyncAdapter):
    name = "taskiq"
    bulk = f"kiq calls, {GATHER} in flight (Taskiq has no bulk enqueue)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        concurrency = concurrency or NOOP_CONCURRENCY
        argv = [venv_bin("taskiq"), "worker", f"{__name__}:broker", "--workers", "1"]
        argv += ["--max-async-tasks", str(concurrency), "--log-level", "WARNING"]
        config = f"taskiq worker --workers 1 --max-async-tasks {concurrency}, RedisStreamBroker"
        return WorkerSpec(argv, config=config)

    async def open(self) -> None:
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()

    async def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        task = noop if kind == "noop" else io
        for start in range(0, len(calls), GATHER):
            await asyncio.gather(*(task.kiq(*c) for c in calls[start : start + GATHER]))

    async def enqueue_one(self, kind: str, call: Call) -> None:
        await (noop if kind == "noop" else io).kiq(*call)


ADAPTER = TaskiqAdapter()
