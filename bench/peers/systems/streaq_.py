"""streaq (Redis Streams, Lua functions) with ``concurrency`` at the workload's, one try
per job, per-job log lines off (``silent=True``: streaq logs every task at INFO
otherwise); results not kept (``ttl=0``) except for ``echo`` jobs (streaq's default of
five minutes). Batches go through ``Worker.enqueue_many`` (one pipeline).
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.peers import tasks
from bench.peers.systems.base import (
    AsyncAdapter,
    Call,
    WorkerSpec,
    arguments,
    concurrency,
    redis_url,
    venv_bin,
)
from streaq import Worker

worker = Worker(redis_url=redis_url(), concurrency=concurrency())


@worker.task(ttl=0, max_tries=1, silent=True, name="noop")
async def noop(number: int, enqueued_ns: int) -> None:
    tasks.noop(number, enqueued_ns)


@worker.task(ttl=0, max_tries=1, silent=True, name="io")
async def io(number: int, enqueued_ns: int) -> None:
    await tasks.io_async(number, enqueued_ns)


@worker.task(max_tries=1, silent=True, name="echo")
async def echo(number: int, enqueued_ns: int, payload: str) -> str:
    return tasks.echo(number, enqueued_ns, payload)


TASKS = {"noop": noop, "io": io, "echo": echo}


class StreaqAdapter(AsyncAdapter):
    name = "streaq"
    bulk = "Worker.enqueue_many (one pipeline per batch)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        argv = [venv_bin("streaq"), "run", f"{__name__}:worker"]
        env = {"PEERS_CONCURRENCY": str(concurrency)} if concurrency else {}
        ttl = "300 (default)" if kind == "echo" else "0"
        return WorkerSpec(
            argv, env, config=f"streaq run, concurrency={concurrency or 200}, ttl={ttl}"
        )

    async def open(self) -> None:
        await worker.__aenter__()

    async def close(self) -> None:
        await worker.__aexit__(None, None, None)

    async def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        task = TASKS[kind]
        await worker.enqueue_many([task.enqueue(*arguments(kind, c)) for c in calls])

    async def enqueue_one(self, kind: str, call: Call) -> None:
        await TASKS[kind].enqueue(*arguments(kind, call))


ADAPTER = StreaqAdapter()
