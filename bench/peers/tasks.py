"""The bodies of the benchmark's tasks, the same for every system.

An adapter registers thin wrappers of these with its system's decorator (each system has
its own signature conventions: arq passes a context, SAQ keyword arguments). Every body
ends in :func:`bench.peers.counter.record`, the one completion counter.
"""

from __future__ import annotations

import asyncio
import time

from bench.peers.counter import record

#: How long an IO job waits, like a network call.
IO_SLEEP = 0.010
#: The 1 KB argument and result of an ``echo`` job.
PAYLOAD = "x" * 1024


def noop(number: int, enqueued_ns: int) -> None:
    """Counts itself and returns."""
    record(number, enqueued_ns, time.time_ns())


def echo(number: int, enqueued_ns: int, payload: str) -> str:
    """Counts itself and returns its 1 KB argument, for the system to store as its result."""
    record(number, enqueued_ns, time.time_ns())
    return payload


def io(number: int, enqueued_ns: int) -> None:
    """Waits 10 ms (cooperatively where gevent has patched ``time.sleep``), then counts."""
    started = time.time_ns()
    time.sleep(IO_SLEEP)
    record(number, enqueued_ns, started)


async def io_async(number: int, enqueued_ns: int) -> None:
    """Awaits 10 ms like a network call, then counts itself."""
    started = time.time_ns()
    await asyncio.sleep(IO_SLEEP)
    record(number, enqueued_ns, started)
