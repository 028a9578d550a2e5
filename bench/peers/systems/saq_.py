"""SAQ on Redis with ``concurrency`` at the workload's, job records dropped when done.

SAQ's workers wait on a blocking BLMOVE, so no poll interval is involved. A finished
job's record is deleted at once (``ttl=-1``: SAQ keeps it 600 s by default). The Redis
client's pool is sized to the concurrency (redis-py 8's default cap of 100 connections
starves a worker of 200 consumers, which then loses jobs). SAQ has no
bulk enqueue: a batch is ``Queue.enqueue`` calls, 32 in flight at a time.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from typing import Any

from bench.peers.counter import record
from bench.peers.systems.base import (
    GATHER,
    IO_SLEEP,
    AsyncAdapter,
    Call,
    WorkerSpec,
    concurrency,
    redis_url,
    venv_bin,
)
from redis.asyncio import Redis
from saq.queue.redis import RedisQueue

# Each of the worker's ``concurrency`` consumers holds a connection in a blocking BLMOVE;
# redis-py 8 caps a pool at 100 connections unless told otherwise.
queue = RedisQueue(Redis.from_url(redis_url(), max_connections=concurrency() + 50))


async def noop(ctx: dict[str, Any], *, number: int, enqueued_ns: int) -> None:
    """Counts itself and returns."""
    record(number, enqueued_ns, time.time_ns())


async def io(ctx: dict[str, Any], *, number: int, enqueued_ns: int) -> None:
    """Waits 10 ms like a network call, then counts itself."""
    started = time.time_ns()
    await asyncio.sleep(IO_SLEEP)
    record(number, enqueued_ns, started)


settings = {"queue": queue, "functions": [noop, io], "concurrency": concurrency()}


class SaqAdapter(AsyncAdapter):
    name = "saq"
    bulk = f"Queue.enqueue calls, {GATHER} in flight (SAQ has no bulk enqueue)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        argv = [venv_bin("saq"), f"{__name__}.settings", "--quiet"]
        env = {"PEERS_CONCURRENCY": str(concurrency)} if concurrency else {}
        return WorkerSpec(argv, env, config=f"saq, concurrency={concurrency or 200}, ttl=-1")

    async def open(self) -> None:
        await queue.connect()

    async def close(self) -> None:
        await queue.disconnect()

    async def _one(self, kind: str, call: Call) -> None:
        await queue.enqueue(kind, number=call[0], enqueued_ns=call[1], ttl=-1, retries=0)

    async def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        for start in range(0, len(calls), GATHER):
            await asyncio.gather(*(self._one(kind, c) for c in calls[start : start + GATHER]))

    async def enqueue_one(self, kind: str, call: Call) -> None:
        await self._one(kind, call)


ADAPTER = SaqAdapter()
