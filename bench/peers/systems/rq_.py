"""RQ 2 with ``SimpleWorker``: jobs run in the worker process itself.

RQ's default ``Worker`` forks a child per job (about a millisecond and a fresh interpreter
state each); ``SimpleWorker`` is the documented way to skip the fork. Either way one RQ
worker process runs one job at a time, so IO jobs run one after another: the IO rows
measure that, not a tuning choice. Results are not kept (``result_ttl=0``) except for
``echo`` jobs (RQ's default of 500 s).
"""

from __future__ import annotations

from collections.abc import Sequence

from bench.peers import tasks
from bench.peers.systems.base import Adapter, Call, WorkerSpec, arguments, redis_url, venv_bin
from redis import Redis
from rq import Queue

FUNCTIONS = {"noop": tasks.noop, "io": tasks.io, "echo": tasks.echo}
#: ``None``: RQ's default result TTL.
RESULT_TTL = {"noop": 0, "io": 0, "echo": None}


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
        data = [
            Queue.prepare_data(
                FUNCTIONS[kind], args=arguments(kind, c), result_ttl=RESULT_TTL[kind]
            )
            for c in calls
        ]
        self.queue.enqueue_many(data)

    def enqueue_one(self, kind: str, call: Call) -> None:
        func = FUNCTIONS[kind]
        self.queue.enqueue(func, *arguments(kind, call), result_ttl=RESULT_TTL[kind])


ADAPTER = RQAdapter()
