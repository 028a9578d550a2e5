"""Huey 3 with ``RedisHuey`` (blocking pops), results of ``None`` not stored (its default).

No-op jobs: ``huey_consumer -k thread -w 2`` (of 1, 2, 4, 8 and 16 threads, 2 drained
fastest here, with a p99 queue wait as low as 8's). IO jobs: greenlet workers (``-k
greenlet``) at the workload's concurrency, with gevent's monkey-patching done first in
this module, as Huey's docs ask. The periodic-task scheduler is off (``-n``): there are none.
"""

from __future__ import annotations

import os

if os.environ.get("PEERS_HUEY_GEVENT"):
    from gevent import monkey

    monkey.patch_all()

import time
from collections.abc import Sequence

from bench.peers.counter import record
from bench.peers.systems.base import (
    IO_SLEEP,
    Adapter,
    Call,
    WorkerSpec,
    redis_url,
    setting,
    venv_bin,
)
from huey import RedisHuey

huey = RedisHuey("peers", url=redis_url())

NOOP_THREADS = setting("HUEY_THREADS", 2)


@huey.task()
def noop(number: int, enqueued_ns: int) -> None:
    """Counts itself and returns."""
    record(number, enqueued_ns, time.time_ns())


@huey.task()
def io(number: int, enqueued_ns: int) -> None:
    """Waits 10 ms (cooperatively under gevent), then counts itself."""
    started = time.time_ns()
    time.sleep(IO_SLEEP)
    record(number, enqueued_ns, started)


class HueyAdapter(Adapter):
    name = "huey"
    bulk = "task() calls in a loop (Huey has no bulk enqueue)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        argv = [venv_bin("huey_consumer"), f"{__name__}.huey", "-n", "-q"]
        if kind == "noop":
            return WorkerSpec(
                [*argv, "-k", "thread", "-w", str(NOOP_THREADS)],
                config=f"huey_consumer -k thread -w {NOOP_THREADS}",
            )
        env = {"PEERS_HUEY_GEVENT": "1"}
        argv += ["-k", "greenlet", "-w", str(concurrency)]
        return WorkerSpec(argv, env, config=f"huey_consumer -k greenlet -w {concurrency}")

    def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        task = noop if kind == "noop" else io
        for call in calls:
            task(*call)


ADAPTER = HueyAdapter()
