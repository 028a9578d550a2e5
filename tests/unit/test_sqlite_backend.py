"""What only the SQLite store does: URLs, the file, pragmas, threads and processes."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from conveyor.backends import backend_from_url
from conveyor.backends.base import JobFilter, Outcome, OutcomeKind, Retention
from conveyor.backends.sqlite import SQLiteBackend, parse_sqlite_url
from conveyor.backends.sqlite.migrations import LATEST_VERSION
from conveyor.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    HistoryTruncatedError,
    ValidationError,
)
from conveyor.job import Job, JobStatus, new_job_id
from conveyor.results import INLINE_RESULT_MAX

pytestmark = pytest.mark.timeout(60)

CHILD = Path(__file__).with_name("sqlite_child.py")


def job(**fields: object) -> Job:
    return Job(id=new_job_id(), type="t", **fields)  # type: ignore[arg-type]


@pytest.fixture
def url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
async def backend(url: str) -> AsyncIterator[SQLiteBackend]:
    store = SQLiteBackend(url)
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()


# -- URLs -------------------------------------------------------------------------------
def test_relative_and_absolute_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert parse_sqlite_url("sqlite:///conveyor.db").path == str(tmp_path / "conveyor.db")
    assert parse_sqlite_url("sqlite:///./data/x.db").path == str(tmp_path / "data" / "x.db")
    assert parse_sqlite_url("sqlite:////var/lib/c.db").path == "/var/lib/c.db"
    assert parse_sqlite_url("sqlite:///with%20space.db").path == str(tmp_path / "with space.db")
    options = parse_sqlite_url("sqlite:///a.db")
    assert (options.synchronous, options.timeout) == ("FULL", 5.0)
    options = parse_sqlite_url("sqlite:///a.db?synchronous=normal&timeout=0.5")
    assert (options.synchronous, options.timeout) == ("NORMAL", 0.5)
    assert isinstance(backend_from_url("sqlite:///a.db"), SQLiteBackend)


@pytest.mark.parametrize(
    ("bad", "says"),
    [
        ("sqlite://", "invalid SQLite URL"),
        ("sqlite:///", "names no file"),
        ("sqlite://host/x.db", "invalid SQLite URL"),
        ("sqlite:///:memory:", "memory://"),
        ("sqlite:///x.db?synchronous=OFF", "unsupported option"),
        ("sqlite:///x.db?mode=ro", "unsupported option"),
        ("sqlite:///x.db?timeout=soon", "timeout"),
    ],
)
def test_bad_urls_are_refused(bad: str, says: str) -> None:
    with pytest.raises(ConfigurationError, match=says):
        SQLiteBackend(bad)


def assert_plain(exc: BaseException) -> None:
    """One line, and no sqlite3 traceback chained to it."""
    assert "\n" not in str(exc)
    assert exc.__cause__ is None
    assert exc.__context__ is None or exc.__suppress_context__


# -- opening the file ---------------------------------------------------------------------
async def test_open_sets_wal_durability_and_schema(url: str, tmp_path: Path) -> None:
    for query, level in (("", 2), ("?synchronous=NORMAL", 1)):
        store = SQLiteBackend(url + query)
        await store.open()

        def pragmas(conn: sqlite3.Connection) -> tuple[object, ...]:
            return tuple(
                conn.execute(f"PRAGMA {name}").fetchone()[0]
                for name in ("journal_mode", "synchronous", "user_version", "busy_timeout")
            )

        try:
            assert await store._run(pragmas) == ("wal", level, LATEST_VERSION, 5000)
        finally:
            await store.aclose()


async def test_missing_directory_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "nowhere" / "x.db"
    store = SQLiteBackend(f"sqlite:///{path}")
    with pytest.raises(BackendUnavailableError, match=f"{path}.*does not exist") as info:
        await store.open()
    assert_plain(info.value)
    await store.aclose()


async def test_a_file_that_is_not_a_database_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "garbage.db"
    path.write_bytes(b"this is not a database, just some text " * 200)
    store = SQLiteBackend(f"sqlite:///{path}")
    with pytest.raises(ConfigurationError, match=f"{path}.*not a SQLite database") as info:
        await store.open()
    assert_plain(info.value)
    await store.aclose()


async def test_a_newer_schema_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "future.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {LATEST_VERSION + 5}")
    conn.close()
    store = SQLiteBackend(f"sqlite:///{path}")
    with pytest.raises(ConfigurationError, match="upgrade conveyor"):
        await store.open()
    await store.aclose()


async def test_a_closed_store_refuses_work(url: str) -> None:
    store = SQLiteBackend(url)
    await store.open()
    await store.aclose()
    await store.aclose()  # idempotent
    with pytest.raises(BackendUnavailableError, match="closed"):
        await store.get_job("x")
    with pytest.raises(BackendUnavailableError, match="closed"):
        await store.fetch(["default"], "w", 1, 30)


@pytest.mark.parametrize("how", ["deleted", "replaced"])
async def test_a_file_deleted_or_replaced_under_the_store_stops_it(
    backend: SQLiteBackend, url: str, tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "store.db"
    await backend.enqueue([job()], idempotency_ttl=60)
    if how == "deleted":
        for name in ("store.db", "store.db-wal", "store.db-shm"):
            (tmp_path / name).unlink(missing_ok=True)
    else:
        other = SQLiteBackend(f"sqlite:///{tmp_path / 'other.db'}")
        await other.open()
        await other.aclose()
        (tmp_path / "other.db").replace(path)
    # Nothing more is acknowledged into a file no other process can open: not this
    # enqueue, not a fetch, not any later call.
    with pytest.raises(BackendUnavailableError, match=f"was {how}"):
        await backend.enqueue([job()], idempotency_ttl=60)
    with pytest.raises(BackendUnavailableError, match=f"was {how}"):
        await backend.fetch(["default"], "w", 10, 30)
    with pytest.raises(BackendUnavailableError):
        await backend.ping()
    (error,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert str(path) in error.getMessage()
    assert "restart" in error.getMessage()


async def test_a_write_is_not_acknowledged_when_the_file_goes_during_it(
    backend: SQLiteBackend, tmp_path: Path
) -> None:
    # The file is deleted while a transaction runs: its caller gets an error, never a
    # result that claims the write was stored.
    def delete_then_write(conn: sqlite3.Connection) -> str:
        (tmp_path / "store.db").unlink()
        conn.execute("INSERT INTO events (type, job_id, at, data) VALUES ('x', 'y', 0, '{}')")
        return "stored"

    with pytest.raises(BackendUnavailableError, match="was deleted"):
        await backend._run(delete_then_write)


async def test_a_full_disk_shrinks_the_claim_batch_until_space_returns(
    backend: SQLiteBackend, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A claim's transaction needs WAL space in proportion to the jobs it claims: here
    # the disk holds a claim of at most `room` jobs.
    room = [8.0]
    asked: list[int] = []
    claim = SQLiteBackend._fetch_tx

    def tight_disk(self: SQLiteBackend, conn: sqlite3.Connection, *args: Any) -> list[Job]:
        limit = args[2]
        asked.append(limit)
        if limit > room[0]:
            full = sqlite3.OperationalError("database or disk is full")
            full.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
            raise full
        return claim(self, conn, *args)

    monkeypatch.setattr(SQLiteBackend, "_fetch_tx", tight_disk)
    await backend.enqueue([job() for _ in range(300)], idempotency_ttl=60)
    claimed: list[int] = []
    for _ in range(4):
        with pytest.raises(BackendUnavailableError, match="full"):
            await backend.fetch(["default"], "w", 100, 30)
    claimed.append(len(await backend.fetch(["default"], "w", 100, 30)))
    assert asked == [100, 50, 25, 12, 6]
    room[0] = float("inf")  # space returns: the batch grows back to what is asked
    for _ in range(6):
        claimed.append(len(await backend.fetch(["default"], "w", 100, 30)))
    assert claimed == [6, 12, 24, 48, 96, 100, 14]


async def test_a_lock_held_past_the_timeout_is_unavailability(tmp_path: Path) -> None:
    path = tmp_path / "locked.db"
    store = SQLiteBackend(f"sqlite:///{path}?timeout=0")
    await store.open()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process writing
    try:
        with pytest.raises(BackendUnavailableError, match="locked"):
            await store.enqueue([job()], idempotency_ttl=60)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
        await store.aclose()


async def test_a_read_only_file_is_unavailability(tmp_path: Path) -> None:
    path = tmp_path / "ro.db"
    store = SQLiteBackend(f"sqlite:///{path}")
    await store.open()

    def read_only(conn: sqlite3.Connection) -> None:
        conn.execute("PRAGMA query_only = ON")  # answers SQLITE_READONLY to writes

    await store._run(read_only)
    try:
        with pytest.raises(BackendUnavailableError, match="readonly"):
            await store.enqueue([job()], idempotency_ttl=60)
    finally:
        await store.aclose()


async def test_a_statement_the_store_refuses_for_good_is_not_unavailability(
    backend: SQLiteBackend,
) -> None:
    # SQLITE_ERROR (a bad statement, a missing table) cannot be fixed by retrying: it is
    # a BackendError, which the API treats as a bug, not "retry later".
    def broken(conn: sqlite3.Connection) -> None:
        conn.execute("SELECT * FROM no_such_table")

    with pytest.raises(BackendError, match="no such table") as info:
        await backend._run(broken)
    assert not isinstance(info.value, BackendUnavailableError)


async def test_jobs_survive_reopening(url: str) -> None:
    first = SQLiteBackend(url)
    stored = job(args=[{"deep": [1, 2]}], idempotency_key="k")
    await first.enqueue([stored], idempotency_ttl=60)
    await first.aclose()
    second = SQLiteBackend(url)
    try:
        record = await second.get_job(stored.id)
        assert record is not None
        assert record.args == [{"deep": [1, 2]}]
        (again,) = await second.enqueue([job(idempotency_key="k")], idempotency_ttl=60)
        assert not again.created
    finally:
        await second.aclose()


# -- threads and event loops ----------------------------------------------------------
async def test_renew_from_a_heartbeat_thread_with_its_own_loop(backend: SQLiteBackend) -> None:
    await backend.enqueue([job()], idempotency_ttl=60)
    (leased,) = await backend.fetch(["default"], "w", 1, 30)
    lost: list[set[str]] = []

    def heartbeat() -> None:
        lost.append(asyncio.run(backend.renew("w", {leased.id: leased.attempts}, 60)))

    thread = threading.Thread(target=heartbeat)
    thread.start()
    await asyncio.to_thread(thread.join)
    assert lost == [set()]
    record = await backend.get_job(leased.id)
    assert record is not None
    assert record.lease_expires_at is not None
    assert record.lease_expires_at > (leased.lease_expires_at or 0) + 29


async def test_enqueue_on_another_instance_wakes_a_waiter(url: str) -> None:
    waiter, producer = SQLiteBackend(url, poll_interval=10), SQLiteBackend(url)
    try:
        await producer.open()
        waiting = asyncio.create_task(waiter.wait_for_work(["default"], timeout=5))
        await asyncio.sleep(0.2)
        started = time.monotonic()
        await producer.enqueue([job()], idempotency_ttl=60)
        await waiting
        # The registry woke it: the 10 s data_version poll could not have.
        assert time.monotonic() - started < 0.2
    finally:
        await waiter.aclose()
        await producer.aclose()


async def test_a_cancelled_fetch_hands_its_jobs_back(backend: SQLiteBackend) -> None:
    await backend.enqueue([job() for _ in range(3)], idempotency_ttl=60)
    fetching = asyncio.create_task(backend.fetch(["default"], "w", 10, 30))
    await asyncio.sleep(0)  # the claim is queued on the database thread
    fetching.cancel()
    with pytest.raises(asyncio.CancelledError):
        await fetching
    await backend.ping()  # the release runs after the claim, before this
    await backend.ping()
    again = await backend.fetch(["default"], "w2", 10, 30)
    assert len(again) == 3
    assert all(j.attempts == 1 for j in again)
    types = [e.type for e in await backend.read_events(None, 100)]
    assert types.count("job_released") == 3  # the cancelled claim did happen


# -- events -------------------------------------------------------------------------------
async def test_purge_trims_events_older_than_the_retention(url: str) -> None:
    now = [1000.0]
    store = SQLiteBackend(url, clock=lambda: now[0], retention=Retention(events=10.0))
    await store.open()
    try:
        await store.enqueue([job() for _ in range(5)], idempotency_ttl=60)
        now[0] += 6
        await store.enqueue([job() for _ in range(7)], idempotency_ttl=60)
        now[0] += 6  # the first five are 12 s old, the next seven 6 s
        await store.purge()
        kept = await store.read_events(None, 100)
        assert [int(e.id) for e in kept] == list(range(6, 13))
        await store.enqueue([job()], idempotency_ttl=60)
        (newest,) = await store.read_events(kept[-1].id, 100)
        assert int(newest.id) == 13
        now[0] += 60
        await store.purge()  # all of them: the feed is empty, its numbering goes on
        assert await store.read_events(None, 100) == []
        with pytest.raises(HistoryTruncatedError) as gap:
            await store.read_events("00000000000000000010", 100)
        assert (gap.value.oldest, gap.value.lost) == (None, 3)
    finally:
        await store.aclose()


async def test_a_malformed_event_cursor_is_refused(backend: SQLiteBackend) -> None:
    with pytest.raises(ValidationError):
        await backend.read_events("not-a-cursor", 10)


# -- several processes on one file ---------------------------------------------------------
def run_children(mode: str, url: str, count: int) -> list[list[str]]:
    children = [
        subprocess.Popen(
            [sys.executable, str(CHILD), mode, url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(count)
    ]
    for child in children:  # every child has imported and opened the store ...
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready", child.stderr
    outputs = []
    for child in children:  # ... before any of them starts
        assert child.stdin is not None
        child.stdin.write("go\n")
        child.stdin.flush()
    for child in children:
        out, err = child.communicate(timeout=45)
        assert child.returncode == 0, err
        outputs.append(json.loads(out))
    return outputs


@pytest.mark.slow
async def test_processes_claiming_from_one_file_never_share_a_job(
    backend: SQLiteBackend, url: str
) -> None:
    jobs = [job(args=[i]) for i in range(600)]
    await backend.enqueue(jobs, idempotency_ttl=60)
    claimed = await asyncio.to_thread(run_children, "claim", url, 3)
    every = [job_id for ids in claimed for job_id in ids]
    assert sum(1 for ids in claimed if ids) >= 2  # they did compete
    assert len(every) == len(set(every)) == 600
    assert set(every) == {j.id for j in jobs}
    stats = await backend.queue_stats()
    assert stats[0].completed == 600


@pytest.mark.slow
async def test_processes_submitting_one_key_create_one_job(
    backend: SQLiteBackend, url: str
) -> None:
    submitted = await asyncio.to_thread(run_children, "submit", url, 3)
    assert len({job_id for ids in submitted for job_id in ids}) == 1
    assert sum(s.pending for s in await backend.queue_stats()) == 1


@pytest.mark.slow
async def test_another_process_enqueue_wakes_a_waiter(backend: SQLiteBackend, url: str) -> None:
    child = subprocess.Popen(
        [sys.executable, str(CHILD), "enqueue", url],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None
    assert child.stdout is not None
    assert await asyncio.to_thread(child.stdout.readline) == "ready\n"
    waiter = asyncio.create_task(backend.wait_for_work(["default"], timeout=20))
    await asyncio.sleep(0.3)
    assert not waiter.done()  # nothing to do yet
    sent = time.monotonic()
    child.stdin.write("go\n")
    child.stdin.flush()
    await waiter
    assert time.monotonic() - sent < 0.5  # seen through PRAGMA data_version
    out, _ = await asyncio.to_thread(child.communicate, timeout=45)
    (job_id,) = json.loads(out)
    (fetched,) = await backend.fetch(["default"], "w", 1, 30)
    assert fetched.id == job_id
    assert fetched.status is JobStatus.RUNNING


# -- result sizes -------------------------------------------------------------------------
async def test_results_stored_before_their_size_was_recorded_are_measured_when_listed(
    backend: SQLiteBackend,
) -> None:
    large, small = "x" * INLINE_RESULT_MAX, "y"
    jobs = [job(), job()]
    await backend.enqueue(jobs, idempotency_ttl=60)
    leased = {j.id: j for j in await backend.fetch(["default"], "w", 2, 30)}
    outcomes = [
        Outcome(j.id, "w", leased[j.id].attempts, OutcomeKind.COMPLETED, result=r)
        for j, r in zip(jobs, (large, small), strict=True)
    ]
    assert await backend.complete(outcomes) == [True, True]
    with sqlite3.connect(backend.path) as conn:
        sizes = dict(conn.execute("SELECT id, result_bytes FROM jobs").fetchall())
        assert sizes == {jobs[0].id: INLINE_RESULT_MAX + 2, jobs[1].id: 3}
        conn.execute("UPDATE jobs SET result_bytes = NULL")  # as a version-4 file left them
    listed = {j.id: j for j in (await backend.list_jobs(JobFilter(), limit=10)).items}
    assert (listed[jobs[0].id].result, listed[jobs[0].id].omitted_result_bytes) == (
        None,
        INLINE_RESULT_MAX + 2,
    )
    assert (listed[jobs[1].id].result, listed[jobs[1].id].omitted_result_bytes) == (small, None)
