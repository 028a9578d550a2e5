"""What every system's adapter provides, in the standard library only.

An adapter module (``systems/<name>_.py``) registers the system's three tasks, ``noop``,
``io`` (10 ms sleep) and ``echo`` (1 KB in, 1 KB result out), thin wrappers of the bodies
in :mod:`bench.peers.tasks`, plus an ``ADAPTER`` instance of a subclass of
:class:`Adapter` or :class:`AsyncAdapter` that says how to start its worker and how to
enqueue. The module is imported by the worker (to find the tasks) and by the client
process (to enqueue), both inside the system's own virtualenv.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from bench.peers.tasks import PAYLOAD

#: The job kinds: a task that does nothing, one that sleeps 10 ms like a network call,
#: and one that takes a 1 KB argument and returns it as a stored 1 KB result.
KINDS = ("noop", "io", "echo")

#: Systems whose adapter runs a worker command of several processes (``drain2``).
MULTIPROCESS = ("conveyor",)
#: Systems with an embedded SQLite store (the ``sqlite_*`` workloads).
SQLITE = ("conveyor", "huey")

#: ``(number, enqueued_ns)``: the arguments of every job (``echo`` adds the payload).
Call = tuple[int, int]


def arguments(kind: str, call: Call) -> tuple[int, int] | tuple[int, int, str]:
    """A job's positional arguments: ``echo`` jobs carry the 1 KB payload too."""
    return (*call, PAYLOAD) if kind == "echo" else call


def sqlite_file(name: str) -> str | None:
    """Where this system keeps its SQLite store, when the workload asks for SQLite
    (``PEERS_STORE=sqlite``): a file in the workload's directory, on the same disk for
    every system; None for Redis."""
    if os.environ.get("PEERS_STORE") != "sqlite":
        return None
    return os.path.join(os.environ["PEERS_COUNTER_DIR"], os.pardir, name)


def results_wanted() -> bool:
    """Whether this process serves an ``echo`` workload, whose results are stored
    (``PEERS_RESULTS``): systems that configure results per application read it."""
    return os.environ.get("PEERS_RESULTS") == "1"


def redis_url() -> str:
    """The Redis the driver started, from ``PEERS_REDIS_URL``."""
    return os.environ["PEERS_REDIS_URL"]


def venv_bin(name: str) -> str:
    """A console script of the running virtualenv."""
    return os.path.join(os.path.dirname(sys.executable), name)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """How to start one worker process for a workload.

    Args:
        argv: the command.
        env: extra environment variables.
        config: the configuration, in words, for the results file.
    """

    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    config: str = ""


class Adapter:
    """A system driven from synchronous code.

    Args:
        name: the system's name in tables.
    """

    name = ""
    is_async = False
    #: How ``enqueue_many`` sends a batch, in words.
    bulk = ""

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        """The worker command for ``kind`` jobs at ``concurrency`` (0: the best for no-op);
        ``processes`` above 1 only for a system in :data:`MULTIPROCESS`."""
        raise NotImplementedError

    def open(self) -> None:
        """Connect; called once before any enqueue."""

    def close(self) -> None:
        """Release connections."""

    def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        """Enqueue a batch of jobs by the system's fastest documented path."""
        raise NotImplementedError

    def enqueue_one(self, kind: str, call: Call) -> None:
        """Enqueue one job, as an application does per request."""
        self.enqueue_many(kind, [call])


class AsyncAdapter:
    """A system driven from asyncio; the same methods, as coroutines."""

    name = ""
    is_async = True
    bulk = ""

    def worker(self, kind: str, concurrency: int, processes: int = 1) -> WorkerSpec:
        """The worker command for ``kind`` jobs at ``concurrency`` (0: the best for no-op);
        ``processes`` above 1 only for a system in :data:`MULTIPROCESS`."""
        raise NotImplementedError

    async def open(self) -> None:
        """Connect; called once before any enqueue."""

    async def close(self) -> None:
        """Release connections."""

    async def enqueue_many(self, kind: str, calls: Sequence[Call]) -> None:
        """Enqueue a batch of jobs by the system's fastest documented path."""
        raise NotImplementedError

    async def enqueue_one(self, kind: str, call: Call) -> None:
        """Enqueue one job, as an application does per request."""
        await self.enqueue_many(kind, [call])


def setting(name: str, default: int) -> int:
    """A tunable of the harness, from ``PEERS_<NAME>`` (to try another configuration)."""
    return int(os.environ.get(f"PEERS_{name}", "") or default)


#: How many enqueue calls an asyncio adapter without a bulk API keeps in flight at once.
GATHER = setting("GATHER", 32)
#: The concurrency of every asyncio worker for no-op jobs.
NOOP_CONCURRENCY = setting("NOOP_CONCURRENCY", 200)
#: The threads of a thread-pool worker (Dramatiq, Huey) for no-op jobs.
NOOP_THREADS = setting("NOOP_THREADS", 8)


def concurrency() -> int:
    """The worker's concurrency, from ``PEERS_CONCURRENCY`` (for settings read at import)."""
    return setting("CONCURRENCY", NOOP_CONCURRENCY)
