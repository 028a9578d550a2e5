"""Queue settings of the SQLite store: pause flags and maximum lengths (table ``queues``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable, Mapping
from typing import TypeVar

from conveyor.backends._common import QUEUE_FULL_RETRY_AFTER
from conveyor.backends.sqlite._conn import transaction, wake
from conveyor.errors import QueueFullError
from conveyor.serialization import dumps

T = TypeVar("T")

_IN = "SELECT value FROM json_each(?)"


def paused_among(conn: sqlite3.Connection, queues: Iterable[str]) -> set[str]:
    """Which of ``queues`` are paused (one indexed read; cheap enough for every fetch)."""
    rows = conn.execute(
        f"SELECT name FROM queues WHERE paused = 1 AND name IN ({_IN})",
        (dumps(list(queues)).decode(),),
    ).fetchall()
    return {row[0] for row in rows}


def check_room(conn: sqlite3.Connection, adding: Mapping[str, int]) -> None:
    """Inside the enqueue transaction: refuse the batch when it would take a limited
    queue's pending and scheduled jobs past its maximum.

    Raises:
        QueueFullError: the first queue without room (the transaction rolls back).
    """
    if not adding:
        return
    limits = conn.execute(
        f"SELECT name, max_length FROM queues WHERE max_length IS NOT NULL AND name IN ({_IN})",
        (dumps(list(adding)).decode(),),
    ).fetchall()
    for queue, max_length in limits:
        (held,) = conn.execute(
            "SELECT count(*) FROM jobs WHERE queue = ? AND status = 'pending'", (queue,)
        ).fetchone()
        if held + adding[queue] > max_length:
            raise QueueFullError(queue, QUEUE_FULL_RETRY_AFTER)


class QueuesMixin:
    """``configure_queue`` / ``pause_queue`` / ``resume_queue`` for :class:`SQLiteBackend`."""

    _key: str

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:  # provided by the store
        raise NotImplementedError

    async def _set_queue(self, queue: str, column: str, value: int | None) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            transaction(
                conn,
                lambda: conn.execute(
                    f"INSERT INTO queues (name, {column}) VALUES (?, ?) "
                    f"ON CONFLICT (name) DO UPDATE SET {column} = excluded.{column}",
                    (queue, value),
                ),
            )
            wake(self._key)  # idle workers of this process look again (resume)

        await self._run(tx)

    async def configure_queue(self, queue: str, *, max_length: int | None) -> None:
        await self._set_queue(queue, "max_length", max_length)

    async def pause_queue(self, queue: str) -> None:
        await self._set_queue(queue, "paused", 1)

    async def resume_queue(self, queue: str) -> None:
        await self._set_queue(queue, "paused", 0)
