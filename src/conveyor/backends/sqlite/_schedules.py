"""The schedules of the SQLite store: one row per schedule, one version counter."""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Sequence
from typing import TypeVar

from conveyor.backends._schedule_codec import definition_json, read_or_skip
from conveyor.backends.base import Fire, Schedule
from conveyor.backends.sqlite._conn import transaction

T = TypeVar("T")

_SELECT = "SELECT id, definition, next_run_at, last_run_at, last_job_id FROM schedules"
_BUMP = "UPDATE schedule_version SET version = version + 1 WHERE id = 1"


class SchedulesMixin:
    """``ScheduleStore`` for :class:`SQLiteBackend`.

    Every change of a definition bumps ``schedule_version`` in the same transaction, so a
    scheduler that polls the counter never misses an edit made by another process.
    """

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:  # provided by the store
        raise NotImplementedError

    async def save_schedule(self, schedule: Schedule) -> Schedule:
        row = (
            schedule.id,
            definition_json(schedule),
            schedule.next_run_at,
            schedule.last_run_at,
            schedule.last_job_id,
        )

        def tx(conn: sqlite3.Connection) -> None:
            def run() -> None:
                conn.execute(
                    "INSERT OR REPLACE INTO schedules (id, definition, next_run_at, "
                    "last_run_at, last_job_id) VALUES (?, ?, ?, ?, ?)",
                    row,
                )
                conn.execute(_BUMP)

            transaction(conn, run)

        await self._run(tx)
        return read_or_skip(*row) or schedule

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        def read(conn: sqlite3.Connection) -> Schedule | None:
            row = conn.execute(f"{_SELECT} WHERE id = ?", (schedule_id,)).fetchone()
            return None if row is None else read_or_skip(*row)

        return await self._run(read)

    async def list_schedules(self) -> list[Schedule]:
        def read(conn: sqlite3.Connection) -> list[Schedule]:
            rows = conn.execute(f"{_SELECT} ORDER BY id").fetchall()
            return [s for row in rows if (s := read_or_skip(*row)) is not None]

        return await self._run(read)

    async def delete_schedule(self, schedule_id: str) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            def run() -> bool:
                gone = conn.execute("DELETE FROM schedules WHERE id = ?", (schedule_id,))
                if gone.rowcount:
                    conn.execute(_BUMP)
                return gone.rowcount > 0

            return transaction(conn, run)

        return await self._run(tx)

    async def schedules_version(self) -> int:
        def read(conn: sqlite3.Connection) -> int:
            row = conn.execute("SELECT version FROM schedule_version WHERE id = 1").fetchone()
            return 0 if row is None else int(row[0])

        return await self._run(read)

    async def record_fires(self, fires: Sequence[Fire]) -> None:
        if not fires:
            return
        ran = [(f.next_run_at, f.fired_at, f.job_id, f.schedule_id) for f in fires if f.job_id]
        skipped = [(f.next_run_at, f.schedule_id) for f in fires if not f.job_id]

        def tx(conn: sqlite3.Connection) -> None:
            def run() -> None:
                # UPDATE, never INSERT: a schedule deleted meanwhile stays deleted.
                conn.executemany(
                    "UPDATE schedules SET next_run_at = ?, last_run_at = ?, last_job_id = ? "
                    "WHERE id = ?",
                    ran,
                )
                conn.executemany("UPDATE schedules SET next_run_at = ? WHERE id = ?", skipped)

            transaction(conn, run)

        await self._run(tx)
