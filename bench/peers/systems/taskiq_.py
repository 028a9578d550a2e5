"""Taskiq with taskiq-redis's ``RedisStreamBroker`` (consumer groups, acknowledgements);
no result backend, except for ``echo`` workloads (taskiq-redis'
``RedisAsyncResultBackend``); ``taskiq worker --workers 1 --max-async-tasks`` at the
workload's concurrency.

The consumer group starts at the stream's beginning (``consumer_id="0"``) so that jobs
queued before the worker's first start are read; the default ``$`` would skip them.
``taskiq worker`` is a supervisor that starts one worker process; memory is reported for
both. Taskiq has no bulk enqueue: a batch is ``kiq`` calls, 32 in flight at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from bench.peers import tasks
from bench.peers.systems.base import (
    GATHER,
    NOOP_CONCURRENCY,
    AsyncAdapter,
    Call,
    WorkerSpec,
    arguments,
    redis_url,
    results_wanted,
    venv_bin,
)
from taskiq_redis import RedisAsyncResultBackend, RedisStreamBroker

broker = RedisStreamBroker(redis_url(), consumer_id="0")
if results_wanted():
    broker = broker.with_result_backend(RedisAsyncResultBackend(redis_url(), result_ex_time=3600))


@broker.task(task_name="noop")
async def noop(number: int, enqueued_ns: int) -> None:
    tasks.noop(number, enqueued_ns)


@broker.task(task_name="io")
async def io(number: int, enqueued_ns: int) -> None:
    await tasks.io_async(number, enqueued_ns)


@broker.task(task_name="echo")
async def echo(number: int, enqueued_ns: int, payload: str) -> str:
    return tasks.echo(number, enqueued_ns, payload)


TASKS = {"noop": noop, "io": io, "echo": echo}


class TaskiqAdapter(AsyncAdapter):
    name = "taskiq"
    bulk = f"kiq calls, {GATHER} in flight (Taskiq has no bulk enqueue)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        concurrency = concurrency or NOOP_CONCURRENCY
        argv = [venv_bin("taskiq"), "worker", f"{__name__}:broker", "--workers", "1"]
        argv += ["--max-async-tasks", str(concurrency), "--log-level", "WARNING"]
        results = ", RedisAsyncResultBackend" if kind == "echo" else ""
        config = f"taskiq worker --workers 1 --max-async-tasks {concurrency}{results}"
        return WorkerSpec(argv, config=config)

    async def open(self) -> None:
        await broker.startup()

    async def close(self) -> None:
        await broker.shutdown()

    async def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        for start in range(0, len(calls), GATHER):
            batch = calls[start : start + GATHER]
            await asyncio.gather(*(self.enqueue_one(kind, c) for c in batch))

    async def enqueue_one(self, kind: str, call: Call) -> None:
        await TASKS[kind].kiq(*arguments(kind, call))


ADAPTER = TaskiqAdapter()
