"""The completion counter every system's tasks call: the one piece of code shared by all.

A task calls :func:`record` with its job number, the enqueue timestamp it was given and
the time it started. Records go to an in-process deque and are written in batches to one
file per process (``<PEERS_COUNTER_DIR>/<pid>.log``), by the caller once a batch is full
and by a daemon thread every 20 ms otherwise, so the driver sees a quiet tail soon.

It imports nothing but the standard library: it runs inside every peer's virtualenv, in
asyncio loops, threads, greenlets (gevent patches ``threading`` and ``time.sleep``) and
forked children alike. ``deque.append`` and ``popleft`` are atomic, so no lock is needed.

Line format: ``number enqueued_ns started_ns finished_ns`` (``time.time_ns()``).
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque

BATCH = 512
INTERVAL = 0.02

_pending: deque[str] = deque()
_owner = {"pid": 0, "fd": -1}


def record(number: int, enqueued_ns: int, started_ns: int) -> None:
    """Count one finished job.

    Args:
        number: the job's number, as the driver gave it.
        enqueued_ns: ``time.time_ns()`` when the producer sent it (carried in its arguments).
        started_ns: ``time.time_ns()`` when the task body began.
    """
    _pending.append(f"{number} {enqueued_ns} {started_ns} {time.time_ns()}\n")
    if _owner["pid"] != os.getpid():
        _start()
    if len(_pending) >= BATCH:
        flush()


def flush() -> None:
    """Write every pending record to this process's file."""
    lines = []
    try:
        while True:
            lines.append(_pending.popleft())
    except IndexError:
        pass
    if lines:
        os.write(_owner["fd"], "".join(lines).encode())


def _start() -> None:
    """Open this process's file and start its flusher (again after a fork)."""
    directory = os.environ["PEERS_COUNTER_DIR"]
    path = os.path.join(directory, f"{os.getpid()}.log")
    _owner["fd"] = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    _owner["pid"] = os.getpid()
    threading.Thread(target=_flusher, name="peers-counter", daemon=True).start()


def _flusher() -> None:
    while True:
        time.sleep(INTERVAL)
        flush()
