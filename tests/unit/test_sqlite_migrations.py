"""The SQLite schema's numbered migrations."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from conveyor.backends.sqlite.migrations import (
    LATEST_VERSION,
    MIGRATIONS,
    SchemaTooNewError,
    migrate,
    schema_version,
)


def test_versions_are_consecutive_from_one() -> None:
    assert [m.version for m in MIGRATIONS] == list(range(1, len(MIGRATIONS) + 1))
    assert MIGRATIONS[-1].version == LATEST_VERSION
    assert all(m.description and m.statements for m in MIGRATIONS)


def test_a_fresh_database_migrates_to_the_latest_version(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "fresh.db", isolation_level=None)
    try:
        assert migrate(conn) == 0
        assert schema_version(conn) == LATEST_VERSION
        tables = {row[0] for row in conn.execute("SELECT name FROM sqlite_master")}
        assert {"jobs", "events", "idempotency", "jobs_claim", "jobs_lease"} <= tables
        assert migrate(conn) == LATEST_VERSION  # a second run is a no-op
    finally:
        conn.close()


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "future.db", isolation_level=None)
    try:
        conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
        with pytest.raises(SchemaTooNewError, match="upgrade conveyor"):
            migrate(conn)
        assert schema_version(conn) == LATEST_VERSION + 1
    finally:
        conn.close()
