"""The worker registry of the SQLite store: one row per live worker (table ``workers``)."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

from conveyor.backends._common import worker_from_json, worker_to_json
from conveyor.backends.base import WorkerInfo
from conveyor.backends.sqlite._conn import transaction

T = TypeVar("T")


class WorkersMixin:
    """``register_worker`` / ``unregister_worker`` / ``list_workers``."""

    _clock: Callable[[], float]

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:  # provided by the store
        raise NotImplementedError

    async def register_worker(self, info: WorkerInfo, ttl: float) -> None:
        row = (info.id, worker_to_json(info), float(self._clock()) + ttl)

        def tx(conn: sqlite3.Connection) -> None:
            transaction(
                conn, lambda: conn.execute("INSERT OR REPLACE INTO workers VALUES (?, ?, ?)", row)
            )

        await self._run(tx)

    async def unregister_worker(self, worker_id: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            transaction(
                conn, lambda: conn.execute("DELETE FROM workers WHERE id = ?", (worker_id,))
            )

        await self._run(tx)

    async def list_workers(self) -> list[WorkerInfo]:
        now = float(self._clock())

        def tx(conn: sqlite3.Connection) -> list[tuple[str]]:
            def run() -> list[tuple[str]]:
                conn.execute("DELETE FROM workers WHERE expires_at <= ?", (now,))
                return conn.execute("SELECT info FROM workers ORDER BY id").fetchall()

            return transaction(conn, run)

        found = (worker_from_json(text) for (text,) in await self._run(tx))
        return [w for w in found if w is not None]
