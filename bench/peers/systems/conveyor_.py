"""Conveyor on Redis: ``conveyor worker`` (one process, asyncio), ``enqueue_many`` batches.

On SQLite (the ``sqlite_*`` workloads) the same, with the store in a file of the workload's
directory. Conveyor keeps every job's record, status and result (retained for the result TTL), so it
does the same store work whether or not anyone reads the result.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bench.peers import tasks
from bench.peers.systems.base import (
    NOOP_CONCURRENCY,
    AsyncAdapter,
    Call,
    WorkerSpec,
    arguments,
    redis_url,
    sqlite_file,
    venv_bin,
)

from conveyor import Conveyor, Settings

# On SQLite: WAL with ``synchronous=FULL`` (Conveyor's default), one file per workload.
SQLITE = sqlite_file("conveyor.db")
URL = f"sqlite:///{os.path.abspath(SQLITE)}" if SQLITE else redis_url()
app = Conveyor(settings=Settings.from_env({}, url=URL))


@app.task(retries=0)
async def noop(number: int, enqueued_ns: int) -> None:
    tasks.noop(number, enqueued_ns)


@app.task(retries=0)
async def io(number: int, enqueued_ns: int) -> None:
    await tasks.io_async(number, enqueued_ns)


@app.task(retries=0)
async def echo(number: int, enqueued_ns: int, payload: str) -> str:
    return tasks.echo(number, enqueued_ns, payload)


TASKS = {"noop": noop, "io": io, "echo": echo}


class ConveyorAdapter(AsyncAdapter):
    name = "conveyor"
    bulk = "Task.enqueue_many (one round trip, one Lua script call per batch)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        concurrency = concurrency or NOOP_CONCURRENCY
        argv = [venv_bin("conveyor"), "--log-level", "error", "worker", f"{__name__}:app"]
        argv += ["--url", URL, "--concurrency", str(concurrency), "--no-scheduler"]
        config = f"conveyor worker --concurrency {concurrency}"
        if processes > 1:
            argv += ["--processes", str(processes)]
            config += f" --processes {processes}"
        return WorkerSpec(argv, config=config)

    async def close(self) -> None:
        await app.aclose()

    async def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        await TASKS[kind].enqueue_many([(arguments(kind, call), {}) for call in calls])

    async def enqueue_one(self, kind: str, call: Call) -> None:
        await TASKS[kind].enqueue(*arguments(kind, call))


ADAPTER = ConveyorAdapter()
