"""Celery 5 on its Redis transport, results ignored (no result backend).

No-op jobs: the ``solo`` pool (tasks run inline in the one worker process, no hand-off
to a pool) with a prefetch of 256 messages, the "many short tasks" advice of Celery's
optimizing guide. IO jobs: the ``gevent`` pool at the workload's concurrency. Heartbeat,
gossip and mingle (worker-to-worker chatter) are off: there is one worker.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence

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
from celery import Celery

app = Celery("peers", broker=redis_url())
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
    """Counts itself and returns."""
    record(number, enqueued_ns, time.time_ns())


@app.task(name="io")
def io(number: int, enqueued_ns: int) -> None:
    """Waits 10 ms (a cooperative sleep under the gevent pool), then counts itself."""
    started = time.time_ns()
    time.sleep(IO_SLEEP)
    record(number, enqueued_ns, started)


class CeleryAdapter(Adapter):
    name = "celery"
    bulk = "apply_async in a loop on one acquired producer (Celery has no bulk publish)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        argv = [venv_bin("celery"), "-A", __name__, "worker", "--loglevel", "WARNING"]
        argv += ["--without-heartbeat", "--without-gossip", "--without-mingle"]
        if kind == "noop":
            pool = ["--pool", NOOP_POOL, "--prefetch-multiplier", str(NOOP_PREFETCH)]
            if NOOP_POOL != "solo":
                pool += ["--concurrency", str(NOOP_THREADS)]
            config = " ".join(pool)
        else:
            pool = [
                "--pool",
                "gevent",
                "--concurrency",
                str(concurrency),
                "--prefetch-multiplier",
                "2",
            ]
            config = f"--pool gevent --concurrency {concurrency} --prefetch-multiplier 2"
        return WorkerSpec(argv + pool, config="celery worker " + config + ", results ignored")

    def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        task = noop if kind == "noop" else io
        with app.producer_or_acquire() as producer:
            for call in calls:
                task.apply_async(call, producer=producer)

    def enqueue_one(self, kind: str, call: Call) -> None:
        (noop if kind == "noop" else io).delay(*call)


ADAPTER = CeleryAdapter()
