"""The leader lock of the SQLite store: one row per lock name."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import Any, TypeVar

from conveyor.backends.sqlite._conn import transaction

T = TypeVar("T")


class LockMixin:
    """``acquire_lock`` / ``release_lock`` for :class:`SQLiteBackend`."""

    _clock: Callable[[], float]

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:  # provided by the store
        raise NotImplementedError

    async def acquire_lock(self, name: str, owner: str, ttl: float) -> int | None:
        now = float(self._clock())

        def tx(conn: sqlite3.Connection) -> int | None:
            def run() -> int | None:
                row: Any = conn.execute(
                    "SELECT owner, expires_at, token FROM locks WHERE name = ?", (name,)
                ).fetchone()
                if row is None:
                    token = 1
                elif row[0] != owner and row[1] > now:
                    return None
                elif row[0] == owner and row[1] > now:
                    token = int(row[2])
                else:
                    token = int(row[2]) + 1
                conn.execute(
                    "INSERT INTO locks (name, owner, expires_at, token) VALUES (?, ?, ?, ?) "
                    "ON CONFLICT (name) DO UPDATE SET owner = excluded.owner, "
                    "expires_at = excluded.expires_at, token = excluded.token",
                    (name, owner, now + ttl, token),
                )
                return token

            return transaction(conn, run)

        return await self._run(tx)

    async def release_lock(self, name: str, owner: str) -> None:
        def tx(conn: sqlite3.Connection) -> None:
            # The row stays, so the next holder's token is higher.
            transaction(
                conn,
                lambda: conn.execute(
                    "UPDATE locks SET owner = '', expires_at = 0 WHERE name = ? AND owner = ?",
                    (name, owner),
                ),
            )

        await self._run(tx)
