"""The delivery log of the SQLite store: webhook state on the job row, named cursors."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from conveyor.backends.sqlite._conn import transaction
from conveyor.serialization import dumps

T = TypeVar("T")


class DeliveryMixin:
    """``record_webhook`` / ``get_cursor`` / ``set_cursor``."""

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:  # provided by the store
        raise NotImplementedError

    async def record_webhook(self, job_id: str, state: dict[str, Any]) -> None:
        text = dumps(state).decode()

        def tx(conn: sqlite3.Connection) -> None:
            transaction(
                conn,
                lambda: conn.execute("UPDATE jobs SET webhook = ? WHERE id = ?", (text, job_id)),
            )

        await self._run(tx)

    async def get_cursor(self, name: str) -> str | None:
        def read(conn: sqlite3.Connection) -> str | None:
            row = conn.execute("SELECT value FROM cursors WHERE name = ?", (name,)).fetchone()
            return None if row is None else str(row[0])

        return await self._run(read)

    async def set_cursor(self, name: str, value: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            transaction(
                conn,
                lambda: conn.execute(
                    "INSERT OR REPLACE INTO cursors (name, value) VALUES (?, ?)", (name, value)
                ),
            )

        await self._run(tx)
