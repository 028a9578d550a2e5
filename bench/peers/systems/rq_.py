"""RQ 2 with ``SimpleWorker``: jobs run in the worker process itself.

RQ's default ``Worker`` forks a child per job (about a millisecond and a fresh interpreter
state each); ``SimpleWorker`` is the documented way to skip the fork. Either way one RQ
worker process runs one job at a time, so IO jobs run one after another: the IO rows
measure that, not a tuning choice. Results are not kept (``result_ttl=0``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from bench.peers.counter import record
from bench.peers.systems.base import IO_SLEEP, Adapter, Call, WorkerSpec, redis_url, venv_bin
from redis import Redis
from rq import Queue


def noop(number: int, enqueued_ns: int) -> None:
    """Counts itself and returns."""
    record(number, enqueued_ns, time.time_ns())


def io(number: int, enqueued_ns: int) -> None:
    """Waits 10 ms, then counts itself."""
    started = time.time_ns()
    time.sleep(IO_SLEEP)
    record(number, enqueued_ns, started)


class RQAdapter(Adapter):
    name = "rq"
    bulk = "Queue.enqueue_many (one pipeline per batch)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        argv = [venv_bin("rq"), "worker", "--url", redis_url(), "-w", "rq.worker.SimpleWorker"]
        argv += ["--quiet", "--disable-job-desc-logging", "default"]
        return WorkerSpec(argv, config="rq worker -w rq.worker.SimpleWorker (one job at a time)")

    def open(self) -> None:
        self.queue = Queue("default", connection=Redis.from_url(redis_url()))

    def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        func = noop if kind == "noop" else io
        self.queue.enqueue_many(
            [Queue.prepare_data(func, args=call, result_ttl=0) for call in calls]
        )

    def enqueue_one(self, kind: str, call: Call) -> None:
        self.queue.enqueue(noop if kind == "noop" else io, *call, result_ttl=0)


ADAPTER = RQAdapter()
