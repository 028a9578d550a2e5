"""Celery 5 on its Redis transport; results ignored except for ``echo`` jobs, which store
theirs in Celery's Redis result backend.

No-op and echo jobs: the ``solo`` pool (tasks run inline in the one worker process, no
hand-off to a pool) with a prefetch of 256 messages, the "many short tasks" advice of
Celery's optimizing guide. IO jobs: the ``gevent`` pool at the workload's concurrency.
Heartbeat, gossip and mingle (worker-to-worker chatter) are off: there is one worker.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from bench.peers import tasks
from bench.peers.systems.base import (
    NOOP_THREADS,
    Adapter,
    Call,
    WorkerSpec,
    arguments,
    redis_url,
    results_wanted,
    setting,
    venv_bin,
)
from celery import Celery

app = Celery("peers", broker=redis_url(), backend=redis_url() if results_wanted() else None)
app.conf.update(
    task_ignore_result=True,
    broker_connection_retry_on_startup=True,
    worker_hijack_root_logger=False,
    task_serializer="json",
    accept_content=["json"],
)

NOOP_PREFETCH = setting("CELERY_PREFETCH", 256)
NOOP_POOL = os.environ.get("PEERS_CELERY_NOOP_POOL", "solo")


@app.task(name="noop")
def noop(number: int, enqueued_ns: int) -> None:
    tasks.noop(number, enqueued_ns)


@app.task(name="io")
def io(number: int, enqueued_ns: int) -> None:
    tasks.io(number, enqueued_ns)  # a cooperative sleep under the gevent pool


@app.task(name="echo", ignore_result=False)
def echo(number: int, enqueued_ns: int, payload: str) -> str:
    return tasks.echo(number, enqueued_ns, payload)


TASKS = {"noop": noop, "io": io, "echo": echo}


class CeleryAdapter(Adapter):
    name = "celery"
    bulk = "apply_async in a loop on one acquired producer (Celery has no bulk publish)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        argv = [venv_bin("celery"), "-A", __name__, "worker", "--loglevel", "WARNING"]
        argv += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
        if kind == "io":
            pool = ["--pool", "gevent", "--concurrency", str(concurrency)]
            pool += ["--prefetch-multiplier", "2"]
        else:
            pool = ["--pool", NOOP_POOL, "--prefetch-multiplier", str(NOOP_PREFETCH)]
            if NOOP_POOL != "solo":
                pool += ["--concurrency", str(NOOP_THREADS)]
        results = "results stored" if kind == "echo" else "results ignored"
        return WorkerSpec(argv + pool, config=f"celery worker {' '.join(pool)}, {results}")

    def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        task = TASKS[kind]
        with app.producer_or_acquire() as producer:
            for call in calls:
                task.apply_async(arguments(kind, call), producer=producer)

    def enqueue_one(self, kind: str, call: Call) -> None:
        TASKS[kind].delay(*arguments(kind, call))


ADAPTER = CeleryAdapter()
