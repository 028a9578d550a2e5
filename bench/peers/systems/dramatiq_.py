"""Dramatiq 2 on its Redis broker, no result backend.

No-op jobs: ``dramatiq --processes 1 --threads 8`` (the default thread count) with a
prefetch of 256 messages (the ``dramatiq_queue_prefetch`` environment variable of its
reference). IO jobs: ``dramatiq-gevent`` (the documented command for many IO-bound
actors) with as many greenlets as the workload's concurrency and a prefetch of twice
that (its default). Either way the command is a supervisor that forks one worker
process; memory is reported for both.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import dramatiq
from bench.peers.counter import record
from bench.peers.systems.base import (
    IO_SLEEP,
    NOOP_THREADS,
    Adapter,
    Call,
    WorkerSpec,
    redis_url,
    setting,
    venv_bin,
)
from dramatiq.brokers.redis import RedisBroker

broker = RedisBroker(url=redis_url())

#: Messages a worker holds ahead. The default, twice the threads, leaves the consumer
#: sleeping between tiny fetches (a backoff of ~5-10 ms each time the prefetch is full),
#: which caps short jobs at about 260 jobs/s per thread.
NOOP_PREFETCH = setting("DRAMATIQ_PREFETCH", 256)
dramatiq.set_broker(broker)


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

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        if kind == "noop":
            command, threads, prefetch = "dramatiq", NOOP_THREADS, NOOP_PREFETCH
        else:
            command, threads, prefetch = "dramatiq-gevent", concurrency, 2 * concurrency
        argv = [venv_bin(command), __name__, "--processes", "1", "--threads", str(threads)]
        env = {"dramatiq_queue_prefetch": str(prefetch)}
        config = f"{command} --processes 1 --threads {threads}, dramatiq_queue_prefetch={prefetch}"
        return WorkerSpec(argv, env, config=config)

    def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        actor = noop if kind == "noop" else io
        for call in calls:
            actor.send(*call)


ADAPTER = DramatiqAdapter()
