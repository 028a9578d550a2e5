"""arq with ``max_jobs`` at the workload's concurrency; results not kept (``keep_result=0``)
except for ``echo`` jobs (arq's default of an hour).

arq's worker polls its queue (a sorted set) every ``poll_delay`` seconds, 0.5 s by
default; that would put half a second into every queue wait, so it is set to 10 ms
(each poll is one ZRANGEBYSCORE, so an idle worker costs the server 100 commands/s).
Per-job log lines are off (arq logs each job at INFO by default). arq has no bulk
enqueue: a batch is ``enqueue_job`` calls, 32 in flight at a time.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any

from arq import create_pool
from arq.connections import RedisSettings
from arq.worker import func
from bench.peers import tasks
from bench.peers.systems.base import (
    GATHER,
    AsyncAdapter,
    Call,
    WorkerSpec,
    arguments,
    concurrency,
    redis_url,
    venv_bin,
)

POLL_DELAY = 0.01
RESULT_SECONDS = 3600

#: For ``--custom-log-dict``: arq logs every job's start and end at INFO by default.
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "handlers": {"stderr": {"level": "WARNING", "class": "logging.StreamHandler"}},
    "loggers": {"arq": {"handlers": ["stderr"], "level": "WARNING"}},
}


async def noop(ctx: dict[str, Any], number: int, enqueued_ns: int) -> None:
    tasks.noop(number, enqueued_ns)


async def io(ctx: dict[str, Any], number: int, enqueued_ns: int) -> None:
    await tasks.io_async(number, enqueued_ns)


async def echo(ctx: dict[str, Any], number: int, enqueued_ns: int, payload: str) -> str:
    return tasks.echo(number, enqueued_ns, payload)


class WorkerSettings:
    """What ``arq bench.peers.systems.arq_.WorkerSettings`` runs."""

    functions = (noop, io, func(echo, keep_result=RESULT_SECONDS))
    redis_settings = RedisSettings.from_dsn(redis_url())
    max_jobs = concurrency()
    poll_delay = POLL_DELAY
    keep_result = 0
    max_tries = 1


class ArqAdapter(AsyncAdapter):
    name = "arq"
    bulk = f"enqueue_job calls, {GATHER} in flight (arq has no bulk enqueue)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        argv = [venv_bin("arq"), f"{__name__}.WorkerSettings"]
        argv += ["--custom-log-dict", f"{__name__}.LOGGING"]
        env = {"PEERS_CONCURRENCY": str(concurrency)} if concurrency else {}
        keep = RESULT_SECONDS if kind == "echo" else 0
        config = f"arq, max_jobs={concurrency or 200}, poll_delay={POLL_DELAY}, keep_result={keep}"
        return WorkerSpec(argv, env, config=config)

    async def open(self) -> None:
        self.pool = await create_pool(RedisSettings.from_dsn(redis_url()))

    async def close(self) -> None:
        await self.pool.aclose()

    async def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        for start in range(0, len(calls), GATHER):
            batch = calls[start : start + GATHER]
            await asyncio.gather(*(self.enqueue_one(kind, c) for c in batch))

    async def enqueue_one(self, kind: str, call: Call) -> None:
        await self.pool.enqueue_job(kind, *arguments(kind, call))


ADAPTER = ArqAdapter()
