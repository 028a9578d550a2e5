"""streaq (Redis Streams, Lua) with ``concurrency`` at the workload's, results not kept
(``ttl=0``), one try per job, per-job log lines off (``silent=True``); batches go through
``Worker.enqueue_many`` (one pipeline).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from bench.peers.counter import record
from bench.peers.systems.base import (
    IO_SLEEP,
    AsyncAdapter,
    Call,
    WorkerSpec,
    concurrency,
    redis_url,
    venv_bin,
)
from streaq import Worker

worker = Worker(redis_url=redis_url(), concurrency=concurrency())


@worker.task(ttl=0, max_tries=1, silent=True, name="noop")
async def noop(number: int, enqueued_ns: int) -> None:
    """Counts itself and returns."""
    record(number, enqueued_ns, time.time_ns())


@worker.task(ttl=0, max_tries=1, silent=True, name="io")
async def io(number: int, enqueued_ns: int) -> None:
    """Waits 10 ms like a network call, then counts itself."""
    started = time.time_ns()
    await asyncio.sleep(IO_SLEEP)
    record(number, enqueued_ns, started)


class StreaqAdapter(AsyncAdapter):
    name = "streaq"
    bulk = "Worker.enqueue_many (one pipeline per batch)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        argv = [venv_bin("streaq"), "run", f"{__name__}:worker"]
        env = {"PEERS_CONCURRENCY": str(concurrency)} if concurrency else {}
        return WorkerSpec(argv, env, config=f"streaq run, concurrency={concurrency or 200}, ttl=0")

    async def open(self) -> None:
        await worker.__aenter__()

    async def close(self) -> None:
        await worker.__aexit__(None, None, None)

    async def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        task = noop if kind == "noop" else io
        await worker.enqueue_many([task.enqueue(*c) for c in calls])

    async def enqueue_one(self, kind: str, call: Call) -> None:
        await (noop if kind == "noop" else io).enqueue(*call)


ADAPTER = StreaqAdapter()
