"""Numbered schema migrations of the SQLite store.

The schema version lives in ``PRAGMA user_version``. A migration is a list of
statements applied in one ``BEGIN IMMEDIATE`` transaction together with the version
bump, so a crash leaves either the old schema or the new one, and two processes opening
a fresh file at once migrate it exactly once. Append new migrations; never edit one
that has shipped.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Migration:
    """One step of the schema.

    Args:
        version: the ``user_version`` the database has after this step.
        description: what the step does, for humans.
        statements: SQL statements, run in order in one transaction.
    """

    version: int
    description: str
    statements: tuple[str, ...]


MIGRATIONS: tuple[Migration, ...] = (
    Migration(
        1,
        "jobs, events and idempotency keys",
        (
            """
            CREATE TABLE jobs (
                id TEXT PRIMARY KEY,
                type TEXT NOT NULL,
                args TEXT NOT NULL,
                kwargs TEXT NOT NULL,
                queue TEXT NOT NULL,
                priority INTEGER NOT NULL,
                status TEXT NOT NULL,
                progress INTEGER NOT NULL,
                result TEXT,
                error TEXT,
                attempts INTEGER NOT NULL,
                max_retries INTEGER NOT NULL,
                timeout REAL,
                created_at REAL NOT NULL,
                run_at REAL NOT NULL,
                started_at REAL,
                completed_at REAL,
                idempotency_key TEXT,
                callback_url TEXT,
                callback_secret TEXT,
                webhook TEXT,
                lease_owner TEXT,
                lease_expires_at REAL
            )
            """,
            # Claiming: the best due jobs of one queue, read in index order (covering).
            "CREATE INDEX jobs_claim ON jobs (queue, status, priority DESC, run_at, id)",
            # The next delayed job of a queue, for wait_for_work, without a scan per priority.
            "CREATE INDEX jobs_due ON jobs (queue, status, run_at)",
            # Expired leases: only running jobs have one.
            """
            CREATE INDEX jobs_lease ON jobs (queue, lease_expires_at)
            WHERE status = 'running'
            """,
            # Purge: only finished jobs carry completed_at.
            """
            CREATE INDEX jobs_finished ON jobs (completed_at)
            WHERE completed_at IS NOT NULL
            """,
            """
            CREATE TABLE events (
                id INTEGER PRIMARY KEY AUTOINCREMENT,
                type TEXT NOT NULL,
                job_id TEXT NOT NULL,
                at REAL NOT NULL,
                data TEXT NOT NULL
            )
            """,
            """
            CREATE TABLE idempotency (
                key TEXT PRIMARY KEY,
                job_id TEXT NOT NULL,
                expires_at REAL NOT NULL
            )
            """,
            "CREATE INDEX idempotency_expiry ON idempotency (expires_at)",
        ),
    ),
    Migration(
        2,
        "leader locks",
        (
            """
            CREATE TABLE locks (
                name TEXT PRIMARY KEY,
                owner TEXT NOT NULL,
                expires_at REAL NOT NULL,
                token INTEGER NOT NULL
            )
            """,
        ),
    ),
    Migration(
        3,
        "queue settings, live workers, delivery cursors",
        (
            """
            CREATE TABLE queues (
                name TEXT PRIMARY KEY,
                max_length INTEGER,
                paused INTEGER NOT NULL DEFAULT 0
            )
            """,
            """
            CREATE TABLE workers (
                id TEXT PRIMARY KEY,
                info TEXT NOT NULL,
                expires_at REAL NOT NULL
            )
            """,
            """
            CREATE TABLE cursors (
                name TEXT PRIMARY KEY,
                value TEXT NOT NULL
            )
            """,
        ),
    ),
    Migration(
        4,
        "schedules",
        (
            # The definition is one JSON document; the run state has columns of its own
            # because the scheduler rewrites it on every fire.
            """
            CREATE TABLE schedules (
                id TEXT PRIMARY KEY,
                definition TEXT NOT NULL,
                next_run_at REAL,
                last_run_at REAL,
                last_job_id TEXT
            )
            """,
            """
            CREATE TABLE schedule_version (
                id INTEGER PRIMARY KEY CHECK (id = 1),
                version INTEGER NOT NULL
            )
            """,
            "INSERT INTO schedule_version (id, version) VALUES (1, 0)",
        ),
    ),
    Migration(
        5,
        "the size of each result",
        (
            # Listings decide by it whether to read a result at all. Rows finished
            # before it existed have NULL and are measured when listed (they expire
            # within the result retention).
            "ALTER TABLE jobs ADD COLUMN result_bytes INTEGER",
        ),
    ),
)

LATEST_VERSION = MIGRATIONS[-1].version


class SchemaTooNewError(Exception):
    """The file was migrated by a newer Conveyor than this one."""

    def __init__(self, found: int) -> None:
        super().__init__(
            f"schema version {found} is newer than this Conveyor supports "
            f"({LATEST_VERSION}); upgrade conveyor"
        )
        self.found = found


def schema_version(conn: sqlite3.Connection) -> int:
    """Return the database's ``user_version``."""
    (version,) = conn.execute("PRAGMA user_version").fetchone()
    return int(version)


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the schema to :data:`LATEST_VERSION`; return the version found before.

    ``conn`` must be in autocommit mode (``isolation_level=None``).

    Raises:
        SchemaTooNewError: the database is newer than the code.
    """
    found = schema_version(conn)
    if found == LATEST_VERSION:
        return found  # the common case: no write lock taken
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Re-read under the write lock: another process may have migrated meanwhile.
        found = schema_version(conn)
        if found > LATEST_VERSION:
            raise SchemaTooNewError(found)
        for migration in MIGRATIONS:
            if migration.version <= found:
                continue
            for statement in migration.statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {migration.version:d}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return found
