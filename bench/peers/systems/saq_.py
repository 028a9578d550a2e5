"""SAQ on Redis with ``concurrency`` at the workload's; a finished job's record (and
result) is deleted at once (``ttl=-1``; SAQ keeps it 600 s by default), except for
``echo`` jobs, which keep SAQ's default so that their result stays readable.

SAQ's workers wait on a blocking BLMOVE, so no poll interval is involved. The Redis
client's pool is sized to the concurrency (redis-py 8's default cap of 100 connections
starves a worker of 200 consumers, which then loses jobs). SAQ has no bulk enqueue: a
batch is ``Queue.enqueue`` calls, 32 in flight at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from bench.peers import tasks
from bench.peers.systems.base import (
    GATHER,
    PAYLOAD,
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
    tasks.noop(number, enqueued_ns)


async def io(ctx: dict[str, Any], *, number: int, enqueued_ns: int) -> None:
    await tasks.io_async(number, enqueued_ns)


async def echo(ctx: dict[str, Any], *, number: int, enqueued_ns: int, payload: str) -> str:
    return tasks.echo(number, enqueued_ns, payload)


settings = {"queue": queue, "functions": [noop, io, echo], "concurrency": concurrency()}
#: ``None``: SAQ's default record TTL.
TTL = {"noop": -1, "io": -1, "echo": None}


class SaqAdapter(AsyncAdapter):
    name = "saq"
    bulk = f"Queue.enqueue calls, {GATHER} in flight (SAQ has no bulk enqueue)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        argv = [venv_bin("saq"), f"{__name__}.settings", "--quiet"]
        env = {"PEERS_CONCURRENCY": str(concurrency)} if concurrency else {}
        ttl = "600 (default)" if kind == "echo" else "-1"
        return WorkerSpec(argv, env, config=f"saq, concurrency={concurrency or 200}, ttl={ttl}")

    async def open(self) -> None:
        await queue.connect()

    async def close(self) -> None:
        await queue.disconnect()

    async def enqueue_one(self, kind: str, call: Call) -> None:
        kwargs: dict[str, Any] = {"number": call[0], "enqueued_ns": call[1], "retries": 0}
        if kind == "echo":
            kwargs["payload"] = PAYLOAD
        if TTL[kind] is not None:
            kwargs["ttl"] = TTL[kind]
        await queue.enqueue(kind, **kwargs)

    async def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        for start in range(0, len(calls), GATHER):
            batch = calls[start : start + GATHER]
            await asyncio.gather(*(self.enqueue_one(kind, c) for c in batch))


ADAPTER = SaqAdapter()
