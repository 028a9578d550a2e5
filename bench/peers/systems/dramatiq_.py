"""Dramatiq 2 on its Redis broker, no result backend.

No-op jobs: ``dramatiq --processes 1 --threads 8`` (the default thread count). IO jobs:
``dramatiq-gevent`` (the documented command for many IO-bound actors) with as many
greenlets as the workload's concurrency. Either way the command is a supervisor that
forks one worker process; memory is reported for both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import dramatiq
from bench.peers.counter import record
from bench.peers.systems.base import IO_SLEEP, Adapter, Call, WorkerSpec, redis_url, venv_bin
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=redis_url())
dramatiq.set_broker(broker)

NOOP_THREADS = 8


@dramatiq.actor(max_retries=0)
def noop(number: int, enqueued_ns: int) -> None:
    """Counts itself and returns."""
    record(number, enqueued_ns, time.time_ns())


@dramatiq.actor(max_retries=0)
def io(number: int, enqueued_ns: int) -> None:
    """Waits 10 ms (cooperatively under gevent), then counts itself."""
    started = time.time_ns()
    time.sleep(IO_SLEEP)
    record(number, enqueued_ns, started)


class DramatiqAdapter(Adapter):
    name = "dramatiq"
    bulk = "Actor.send in a loop (Dramatiq has no bulk enqueue)"

    def worker(self, kind: str, concurrency: int) -> WorkerSpec:
        if kind == "noop":
            command, threads = "dramatiq", NOOP_THREADS
        else:
            command, threads = "dramatiq-gevent", concurrency
        argv = [venv_bin(command), __name__, "--processes", "1", "--threads", str(threads)]
        return WorkerSpec(argv, config=f"{command} --processes 1 --threads {threads}")

    def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        actor = noop if kind == "noop" else io
        for call in calls:
            actor.send(*call)


ADAPTER = DramatiqAdapter()
