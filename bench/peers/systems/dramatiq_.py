"""Dramatiq 2 on its Redis broker; ``echo`` jobs store their results with the Results
middleware and its Redis backend, the others have no result backend.

No-op and echo jobs: ``dramatiq --processes 1 --threads 8`` (the default thread count)
with a prefetch of 256 messages (the ``dramatiq_queue_prefetch`` environment variable of
its reference). IO jobs: ``dramatiq-gevent`` (the documented command for many IO-bound
actors) with as many greenlets as the workload's concurrency and a prefetch of twice
that (its default). Either way the command is a supervisor that forks one worker
process; memory is reported for both.
"""

from __future__ import annotations

from collections.abc import Sequence

import dramatiq
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
from dramatiq.brokers.redis import RedisBroker
from dramatiq.results import Results
from dramatiq.results.backends import RedisBackend

broker = RedisBroker(url=redis_url())
if results_wanted():
    broker.add_middleware(Results(backend=RedisBackend(url=redis_url())))
dramatiq.set_broker(broker)

#: Messages a worker holds ahead. The default, twice the threads, leaves the consumer
#: sleeping between tiny fetches (a backoff of ~5-10 ms each time the prefetch is full),
#: which caps short jobs at about 260 jobs/s per thread.
NOOP_PREFETCH = setting("DRAMATIQ_PREFETCH", 256)


@dramatiq.actor(max_retries=0)
def noop(number: int, enqueued_ns: int) -> None:
    tasks.noop(number, enqueued_ns)


@dramatiq.actor(max_retries=0)
def io(number: int, enqueued_ns: int) -> None:
    tasks.io(number, enqueued_ns)  # a cooperative sleep under gevent


# ``store_results`` is an option only where the Results middleware is installed.
@dramatiq.actor(max_retries=0, **({"store_results": True} if results_wanted() else {}))
def echo(number: int, enqueued_ns: int, payload: str) -> str:
    return tasks.echo(number, enqueued_ns, payload)


ACTORS = {"noop": noop, "io": io, "echo": echo}


class DramatiqAdapter(Adapter):
    name = "dramatiq"
    bulk = "Actor.send in a loop (Dramatiq has no bulk enqueue)"

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        if kind == "io":
            command, threads, prefetch = "dramatiq-gevent", concurrency, 2 * concurrency
        else:
            command, threads, prefetch = "dramatiq", NOOP_THREADS, NOOP_PREFETCH
        argv = [venv_bin(command), __name__, "--processes", "1", "--threads", str(threads)]
        env = {"dramatiq_queue_prefetch": str(prefetch)}
        config = f"{command} --processes 1 --threads {threads}, dramatiq_queue_prefetch={prefetch}"
        return WorkerSpec(argv, env, config=config)

    def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        actor = ACTORS[kind]
        for call in calls:
            actor.send(*arguments(kind, call))


ADAPTER = DramatiqAdapter()
