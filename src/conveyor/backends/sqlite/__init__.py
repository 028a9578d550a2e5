"""The embedded store (``sqlite:///relative.db``, ``sqlite:////absolute.db``).

Durable and safe for several local processes (API, workers, scheduler) sharing one file:

- WAL journal, ``synchronous=FULL`` by default, so an acknowledged write survives power
  loss. ``?synchronous=NORMAL`` is faster but only survives an application crash (the
  last commits may be lost if the machine loses power). ``?timeout=S`` sets how long a
  writer waits for the lock (default 5 s).
- Every write is one ``BEGIN IMMEDIATE`` transaction, so two processes claiming jobs
  serialize on the write lock and never hand out the same job twice.
- All database work of one instance runs on one dedicated thread that owns the
  connection. Each public coroutine makes exactly one hop to that thread, carrying its
  whole transaction, so an instance may be used from any event loop and thread.
- An idle worker's ``wait_for_work`` wakes at once for an enqueue made through any
  instance in this process, within ``poll_interval`` (20 ms) for a commit made by another
  process (seen through ``PRAGMA data_version``), and at the next delayed job's due time
  or lease expiry.

``sqlite:///:memory:`` is refused: each connection would get its own empty database, so
processes and event loops would not share jobs. Use ``memory://`` for that.
"""

from __future__ import annotations

from conveyor.backends.sqlite._conn import SQLiteOptions, parse_sqlite_url
from conveyor.backends.sqlite.backend import SQLiteBackend

__all__ = ["SQLiteBackend", "SQLiteOptions", "parse_sqlite_url"]
