"""Huey 3 with ``RedisHuey`` (blocking pops); a task's result is stored unless it is
``None`` (Huey's default), so only ``echo`` jobs store theirs.

No-op and echo jobs: ``huey_consumer -k thread -w 2`` (of 1, 2, 4, 8 and 16 threads, 2
drained fastest here, with a p99 queue wait as low as 8's). IO jobs: greenlet workers
(``-k greenlet``) at the workload's concurrency, with gevent's monkey-patching done first
in this module, as Huey's docs ask. The periodic-task scheduler is off (``-n``). On
SQLite (the ``sqlite_*`` workloads): ``SqliteHuey`` with fsync on, polled every 20 ms.
"""

from __future__ import annotations

import os

if os.environ.get("PEERS_HUEY_GEVENT"):
    from gevent import monkey

    monkey.patch_all()

from collections.abc import Sequence

from bench.peers import tasks
from bench.peers.systems.base import (
    Adapter,
    Call,
    WorkerSpec,
    arguments,
    redis_url,
    setting,
    sqlite_file,
    venv_bin,
)
from huey import RedisHuey, SqliteHuey

SQLITE = sqlite_file("huey.db")
# On SQLite: fsync on (``synchronous=FULL``, as Conveyor's SQLite store), WAL (its default).
huey = (
    SqliteHuey("peers", filename=SQLITE, fsync=True)
    if SQLITE
    else RedisHuey("peers", url=redis_url())
)
#: SqliteHuey is polled; by default each idle worker waits 0.1 s, growing 15% a time up to
#: 10 s. Polling every 20 ms, as Conveyor's SQLite worker looks for new commits.
SQLITE_POLL = ["-d", "0.02", "-m", "0.02", "-b", "1.0"]

NOOP_THREADS = setting("HUEY_THREADS", 2)


@huey.task()
def noop(number: int, enqueued_ns: int) -> None:
    tasks.noop(number, enqueued_ns)


@huey.task()
def io(number: int, enqueued_ns: int) -> None:
    tasks.io(number, enqueued_ns)  # a cooperative sleep under gevent


@huey.task()
def echo(number: int, enqueued_ns: int, payload: str) -> str:
    return tasks.echo(number, enqueued_ns, payload)


TASKS = {"noop": noop, "io": io, "echo": echo}


class HueyAdapter(Adapter):
    name = "huey"
    bulk = "task() calls in a loop (Huey has no bulk enqueue)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        argv = [venv_bin("huey_consumer"), f"{__name__}.huey", "-n", "-q"]
        if SQLITE:
            argv += SQLITE_POLL
        if kind != "io":
            threads = ["-k", "thread", "-w", str(NOOP_THREADS)]
            return WorkerSpec(argv + threads, config=f"huey_consumer {' '.join(threads)}")
        env = {"PEERS_HUEY_GEVENT": "1"}
        argv += ["-k", "greenlet", "-w", str(concurrency)]
        return WorkerSpec(argv, env, config=f"huey_consumer -k greenlet -w {concurrency}")

    def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        task = TASKS[kind]
        for call in calls:
            task(*arguments(kind, call))


ADAPTER = HueyAdapter()
