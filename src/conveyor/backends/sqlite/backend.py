"""The :class:`SQLiteBackend` class: enqueue, claim, complete, records, events."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from conveyor.backends._common import (
    EVENT_OF_OUTCOME,
    STATUS_OF_OUTCOME,
    accept_new,
    apply_outcome,
    claim_or_give_back,
    created_event_data,
    encoded_result,
    lease_expired_error,
    outcome_event_data,
    parse_event_number,
    reset_for_retry,
)
from conveyor.backends.base import (
    EnqueueResult,
    Event,
    JobFilter,
    JobPage,
    Outcome,
    OutcomeKind,
    QueueStats,
    Retention,
)
from conveyor.backends.sqlite._conn import (
    FileIdentity,
    connect,
    moved_away,
    parse_sqlite_url,
    subscribe,
    transaction,
    translate,
    unsubscribe,
    wake,
)
from conveyor.backends.sqlite._delivery import DeliveryMixin
from conveyor.backends.sqlite._lock import LockMixin
from conveyor.backends.sqlite._queues import QueuesMixin, check_room, paused_among
from conveyor.backends.sqlite._rows import (
    COLUMNS,
    FINISHED,
    IDS,
    INSERT,
    LISTED,
    SAVE_STATE,
    SELECT,
    job_from_row,
    job_to_row,
    listed_from_row,
    state_row,
)
from conveyor.backends.sqlite._schedules import SchedulesMixin
from conveyor.backends.sqlite._workers import WorkersMixin
from conveyor.errors import (
    BackendUnavailableError,
    ConflictError,
    HistoryTruncatedError,
    JobNotFoundError,
)
from conveyor.job import Job, JobStatus
from conveyor.serialization import dumps, loads

T = TypeVar("T")
_EventRow = tuple[int, str, str, float, str]

logger = logging.getLogger(__name__)


def _disk_full(exc: BaseException) -> bool:
    cause = exc.__cause__
    return getattr(cause, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL


@dataclass(frozen=True, slots=True)
class _Probe:
    version: int
    checked: bool
    now: float = 0.0
    soonest: float | None = None


class SQLiteBackend(
    LockMixin,
    QueuesMixin,
    WorkersMixin,
    DeliveryMixin,
    SchedulesMixin,
):
    """A :class:`~conveyor.backends.base.Backend` on one SQLite file.

    Args:
        url: ``sqlite:///relative.db`` or ``sqlite:////absolute.db``, with optional
            ``?synchronous=FULL|EXTRA|NORMAL`` and ``?timeout=SECONDS``.
        clock: the store's clock (seconds since the epoch); tests inject their own.
        poll_interval: how often an idle ``wait_for_work`` looks for commits made by
            other processes, in seconds.
        retention: how long finished jobs and events are kept (applied by :meth:`purge`).

    Raises:
        ConfigurationError: the URL is malformed.
    """

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] = time.time,
        poll_interval: float = 0.02,
        retention: Retention | None = None,
    ) -> None:
        self.url = url
        self.retention = retention or Retention()
        self.options = parse_sqlite_url(url)
        self.path = self.options.path
        self._key = os.path.realpath(self.path)
        self._clock = clock
        self._poll = poll_interval
        self._conn: sqlite3.Connection | None = None
        self._identity: FileIdentity | None = None
        #: The most jobs one claim takes while the disk is (or lately was) full.
        self._claim_cap: int | None = None
        #: Why this instance stopped using its file, once it has.
        self._lost: str | None = None
        self._closed = False
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="conveyor-sqlite"
        )

    def __repr__(self) -> str:
        return f"<SQLiteBackend {self.path}>"

    # -- the database thread ---------------------------------------------------------
    def _call(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        if self._closed:
            raise BackendUnavailableError(f"SQLite store {self.path} is closed")
        if self._lost is not None:
            raise BackendUnavailableError(self._lost)
        if self._conn is None:
            self._conn = connect(self.options)
            self._identity = FileIdentity.of(self.path)
        self._check_file()
        result = self._guarded(fn, self._conn)
        # Checked again before the caller sees the result: a write into a deleted or
        # replaced file must never be acknowledged.
        self._check_file()
        return result

    def _check_file(self) -> None:
        assert self._identity is not None
        how = moved_away(self.path, self._identity)
        if how is None:
            return
        self._lost = (
            f"SQLite store {self.path} {how} while this process had it open: this process "
            "stops using it (restart it to open the file now at that path)"
        )
        logger.error("%s", self._lost)
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        raise BackendUnavailableError(self._lost)

    def _guarded(self, fn: Callable[[sqlite3.Connection], T], conn: sqlite3.Connection) -> T:
        try:
            return fn(conn)
        except sqlite3.IntegrityError as exc:
            raise ConflictError(f"SQLite store {self.path}: {exc}") from exc
        except sqlite3.DatabaseError as exc:
            raise translate(exc, f"SQLite store {self.path}") from exc

    def _submit(self, fn: Callable[[sqlite3.Connection], T]) -> asyncio.Future[T]:
        if self._closed:
            raise BackendUnavailableError(f"SQLite store {self.path} is closed")
        # The loop running now, not one remembered: heartbeat threads bring their own.
        return asyncio.get_running_loop().run_in_executor(self._executor, self._call, fn)

    async def _run(self, fn: Callable[[sqlite3.Connection], T]) -> T:
        return await self._submit(fn)

    def _emit(
        self, conn: sqlite3.Connection, events: Iterable[tuple[str, str, float, Any]]
    ) -> None:
        conn.executemany(
            "INSERT INTO events (type, job_id, at, data) VALUES (?, ?, ?, ?)",
            [(t, job_id, at, dumps(data).decode()) for t, job_id, at, data in events],
        )

    def _jobs_by_id(self, conn: sqlite3.Connection, ids: Iterable[str]) -> dict[str, Job]:
        rows = conn.execute(f"{SELECT} WHERE id IN ({IDS})", (dumps(list(ids)).decode(),))
        return {row[0]: job_from_row(row) for row in rows}

    # -- lifecycle -------------------------------------------------------------------
    async def open(self) -> None:
        """Open the file, switch it to WAL and migrate its schema.

        Raises:
            BackendUnavailableError: the file cannot be opened or written.
            ConfigurationError: the file is not a SQLite database, or its schema is newer
                than this version of Conveyor.
        """
        await self._run(lambda conn: None)

    async def aclose(self) -> None:
        if self._closed:
            return

        def close() -> None:  # not through _call: closing needs no checks
            if self._conn is not None:
                self._conn.close()
                self._conn = None

        try:
            await asyncio.get_running_loop().run_in_executor(self._executor, close)
        finally:
            self._closed = True
            self._executor.shutdown(wait=False)

    async def ping(self) -> None:
        await self._run(lambda conn: conn.execute("SELECT 1").fetchone())

    async def now(self) -> float:
        return float(self._clock())

    # -- producing -------------------------------------------------------------------
    async def enqueue(self, jobs: Sequence[Job], *, idempotency_ttl: float) -> list[EnqueueResult]:
        if not jobs:
            return []
        batch = list(jobs)

        def run(conn: sqlite3.Connection) -> list[EnqueueResult]:
            results = transaction(conn, lambda: self._enqueue_tx(conn, batch, idempotency_ttl))
            if any(r.created for r in results):
                wake(self._key)
            return results

        return await self._run(run)

    def _enqueue_tx(
        self, conn: sqlite3.Connection, jobs: list[Job], ttl: float
    ) -> list[EnqueueResult]:
        now = float(self._clock())
        results: list[EnqueueResult] = []
        rows: list[tuple[Any, ...]] = []
        keys: list[tuple[str, str, float]] = []
        events: list[tuple[str, str, float, Any]] = []
        in_batch: dict[str, Job] = {}
        adding: dict[str, int] = {}
        for new in jobs:
            key = new.idempotency_key
            if key is not None:
                existing = in_batch.get(key) or self._remembered(conn, key, now)
                if existing is not None:
                    results.append(EnqueueResult(existing.copy(), False))
                    continue
            job = accept_new(new, now)
            rows.append(job_to_row(job))
            if key is not None:
                in_batch[key] = job
                keys.append((key, job.id, now + ttl))
            events.append(("job_created", job.id, now, created_event_data(job.queue, job.type)))
            results.append(EnqueueResult(job.copy(), True))
            adding[job.queue] = adding.get(job.queue, 0) + 1
        check_room(conn, adding)
        conn.executemany(INSERT, rows)
        conn.executemany("INSERT OR REPLACE INTO idempotency VALUES (?, ?, ?)", keys)
        self._emit(conn, events)
        return results

    def _remembered(self, conn: sqlite3.Connection, key: str, now: float) -> Job | None:
        row = conn.execute(
            f"{SELECT} WHERE id = (SELECT job_id FROM idempotency "
            "WHERE key = ? AND expires_at > ?)",
            (key, now),
        ).fetchone()
        return None if row is None else job_from_row(row)

    # -- consuming -------------------------------------------------------------------
    async def fetch(
        self, queues: Sequence[str], worker_id: str, limit: int, lease_seconds: float
    ) -> list[Job]:
        if limit <= 0 or not queues:
            return []
        names = list(dict.fromkeys(queues))
        cap = self._claim_cap
        take = limit if cap is None else min(limit, cap)

        def run(conn: sqlite3.Connection) -> list[Job]:
            return transaction(
                conn, lambda: self._fetch_tx(conn, names, worker_id, take, lease_seconds)
            )

        try:
            jobs = await claim_or_give_back(
                self._submit(run),
                worker_id,
                lambda outcomes: self._executor.submit(
                    self._call, lambda conn: self._complete_in_thread(conn, outcomes)
                ),
            )
        except BackendUnavailableError as exc:
            if _disk_full(exc):
                # One claim is one transaction, and its WAL frames must fit on the disk
                # at once (claiming 100 jobs with 100 KB of arguments each rewrites
                # ~10 MB): claim fewer until space returns, or the worker never fetches.
                self._claim_cap = max(1, take // 2)
            raise
        if cap is not None:
            self._claim_cap = None if cap * 2 >= limit else cap * 2
        return jobs

    def _fetch_tx(
        self,
        conn: sqlite3.Connection,
        queues: list[str],
        worker_id: str,
        limit: int,
        lease_seconds: float,
    ) -> list[Job]:
        now = float(self._clock())
        paused = paused_among(conn, queues)
        if paused:
            queues = [q for q in queues if q not in paused]
            if not queues:
                return []
        queues_json = dumps(queues).decode()
        events: list[tuple[str, str, float, Any]] = []
        changed: list[Job] = []
        out: list[Job] = []
        seen: set[str] = set()
        # Jobs whose worker died come first, oldest expiry first.
        while len(out) < limit:
            rows = conn.execute(
                f"{SELECT} WHERE status = 'running' AND queue IN ({IDS}) "
                "AND lease_expires_at <= ? ORDER BY lease_expires_at, id LIMIT ?",
                (queues_json, now, limit - len(out) + len(seen)),
            ).fetchall()
            fresh = [job_from_row(row) for row in rows if row[0] not in seen]
            if not fresh:
                break
            for job in fresh:
                seen.add(job.id)
                if job.attempts > job.max_retries:
                    job.status = JobStatus.FAILED
                    job.error = lease_expired_error(job.attempts)
                    job.completed_at = now
                    job.lease_owner = job.lease_expires_at = None
                    events.append(("job_failed", job.id, now, {"error": job.error}))
                    changed.append(job)
                    continue
                job.status = JobStatus.RUNNING
                job.attempts += 1
                job.started_at = now
                job.lease_owner = worker_id
                job.lease_expires_at = now + lease_seconds
                changed.append(job)
                out.append(job)
                if len(out) >= limit:
                    break
        conn.executemany(SAVE_STATE, [state_row(job) for job in changed])
        if len(out) < limit:
            out.extend(
                self._claim_ready(conn, queues, worker_id, limit - len(out), now, lease_seconds)
            )
        events.extend(
            ("job_started", job.id, now, {"attempt": job.attempts, "workerId": worker_id})
            for job in out
        )
        self._emit(conn, events)
        return [job.copy() for job in out]

    def _claim_ready(
        self,
        conn: sqlite3.Connection,
        queues: list[str],
        worker_id: str,
        limit: int,
        now: float,
        lease_seconds: float,
    ) -> list[Job]:
        # Per queue and priority level, one index range of due jobs; levels are walked
        # from the highest down with O(log n) steps. A single ORDER BY priority would
        # scan past every delayed job of a level that has fewer due jobs than wanted, so
        # an idle fetch would cost O(delayed jobs). Queues are merged here.
        candidates: list[tuple[int, float, str]] = []
        for queue in queues:
            want = limit
            (level,) = conn.execute(
                "SELECT max(priority) FROM jobs WHERE queue = ? AND status = 'pending'", (queue,)
            ).fetchone()
            while level is not None and want > 0:
                rows = conn.execute(
                    "SELECT -priority, run_at, id FROM jobs WHERE queue = ? "
                    "AND status = 'pending' AND priority = ? AND run_at <= ? "
                    "ORDER BY run_at, id LIMIT ?",
                    (queue, level, now, want),
                ).fetchall()
                candidates += rows
                want -= len(rows)
                (level,) = conn.execute(
                    "SELECT max(priority) FROM jobs WHERE queue = ? AND status = 'pending' "
                    "AND priority < ?",
                    (queue, level),
                ).fetchone()
        if not candidates:
            return []
        order = [job_id for _, _, job_id in sorted(candidates)[:limit]]
        rows = conn.execute(
            "UPDATE jobs SET status = 'running', attempts = attempts + 1, started_at = ?, "
            f"lease_owner = ?, lease_expires_at = ? WHERE id IN ({IDS}) RETURNING {COLUMNS}",
            (now, worker_id, now + lease_seconds, dumps(order).decode()),
        ).fetchall()
        claimed = {row[0]: job_from_row(row) for row in rows}
        return [claimed[job_id] for job_id in order]

    async def renew(
        self, worker_id: str, leases: Mapping[str, int], lease_seconds: float
    ) -> set[str]:
        if not leases:
            return set()
        pairs = dumps([[job_id, attempt] for job_id, attempt in leases.items()]).decode()

        def tx(conn: sqlite3.Connection) -> set[str]:
            rows = conn.execute(
                "UPDATE jobs SET lease_expires_at = ? WHERE status = 'running' "
                "AND lease_owner = ? AND (id, attempts) IN (SELECT json_extract(value, '$[0]'), "
                "json_extract(value, '$[1]') FROM json_each(?)) RETURNING id",
                (float(self._clock()) + lease_seconds, worker_id, pairs),
            ).fetchall()
            return {row[0] for row in rows}

        kept = await self._run(lambda conn: transaction(conn, lambda: tx(conn)))
        return set(leases) - kept

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        batch = list(outcomes)
        return await self._run(lambda conn: self._complete_in_thread(conn, batch))

    def _complete_in_thread(self, conn: sqlite3.Connection, outcomes: list[Outcome]) -> list[bool]:
        accepted, requeued = transaction(conn, lambda: self._complete_tx(conn, outcomes))
        if requeued:
            wake(self._key)
        return accepted

    def _complete_tx(
        self, conn: sqlite3.Connection, outcomes: list[Outcome]
    ) -> tuple[list[bool], bool]:
        now = float(self._clock())
        jobs = self._jobs_by_id(conn, {o.job_id for o in outcomes})
        accepted: list[bool] = []
        changed: dict[str, tuple[Job, bytes | None]] = {}
        events: list[tuple[str, str, float, Any]] = []
        requeued = False
        for outcome in outcomes:
            job = jobs.get(outcome.job_id)
            if (
                job is None
                or job.status is not JobStatus.RUNNING
                or job.lease_owner != outcome.worker_id
                or job.attempts != outcome.attempt
            ):
                accepted.append(False)
                continue
            apply_outcome(job, outcome, now)
            requeued = requeued or STATUS_OF_OUTCOME[outcome.kind] is JobStatus.PENDING
            # Encoded once (by the worker, as a rule) for the record and the event alike.
            encoded = encoded_result(outcome) if outcome.kind is OutcomeKind.COMPLETED else None
            changed[job.id] = (job, encoded)
            data = outcome_event_data(outcome, job, encoded)
            events.append((EVENT_OF_OUTCOME[outcome.kind], job.id, now, data))
            accepted.append(True)
        conn.executemany(SAVE_STATE, [state_row(*change) for change in changed.values()])
        self._emit(conn, events)
        return accepted, requeued

    async def set_progress(self, job_id: str, attempt: int, progress: int) -> bool:
        def tx(conn: sqlite3.Connection) -> bool:
            now = float(self._clock())
            row = conn.execute(
                "UPDATE jobs SET progress = ? WHERE id = ? AND status = 'running' "
                "AND attempts = ? RETURNING id",
                (progress, job_id, attempt),
            ).fetchone()
            if row is None:
                return False
            self._emit(conn, [("job_progress", job_id, now, {"progress": progress})])
            return True

        return await self._run(lambda conn: transaction(conn, lambda: tx(conn)))

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a job in ``queues`` may be fetchable, or after ``timeout`` seconds.

        See the module docstring for what wakes it.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        names = list(dict.fromkeys(queues))
        event = asyncio.Event()
        waiter = (loop, event)
        subscribe(self._key, waiter)
        try:
            version: int | None = None
            wake_at = deadline
            while True:
                last = None if event.is_set() else version
                event.clear()
                probe = await self._run(functools.partial(self._probe, queues=names, last=last))
                version = probe.version
                if probe.checked:
                    if probe.soonest is not None and probe.soonest <= probe.now:
                        return
                    wake_at = deadline
                    if probe.soonest is not None:
                        wake_at = min(deadline, loop.time() + probe.soonest - probe.now)
                pause = min(wake_at, loop.time() + self._poll) - loop.time()
                if pause <= 0:
                    return
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(event.wait(), pause)
                if loop.time() >= wake_at:
                    return
        finally:
            unsubscribe(self._key, waiter)

    def _probe(self, conn: sqlite3.Connection, queues: list[str], last: int | None) -> _Probe:
        # data_version changes when another connection (this process or another) commits;
        # only then are the due-time queries worth running again.
        (version,) = conn.execute("PRAGMA data_version").fetchone()
        if last is not None and version == last:
            return _Probe(version, checked=False)
        now = float(self._clock())
        soonest: float | None = None
        paused = paused_among(conn, queues)
        for queue in queues:
            if queue in paused:
                continue
            for status, column in (("pending", "run_at"), ("running", "lease_expires_at")):
                (at,) = conn.execute(
                    f"SELECT min({column}) FROM jobs WHERE queue = ? AND status = '{status}'",
                    (queue,),
                ).fetchone()
                if at is not None and (soonest is None or at < soonest):
                    soonest = at
        return _Probe(version, checked=True, now=now, soonest=soonest)

    # -- records ---------------------------------------------------------------------
    async def get_job(self, job_id: str) -> Job | None:
        def read(conn: sqlite3.Connection) -> Job | None:
            row = conn.execute(f"{SELECT} WHERE id = ?", (job_id,)).fetchone()
            return None if row is None else job_from_row(row)

        return await self._run(read)

    async def list_jobs(
        self, filter: JobFilter, *, limit: int, cursor: str | None = None
    ) -> JobPage:
        clauses: list[str] = []
        params: list[Any] = []
        for clause, value in (
            ("id < ?", cursor),
            ("status = ?", None if filter.status is None else filter.status.value),
            ("type = ?", filter.type),
            ("queue = ?", filter.queue),
        ):
            if value is not None:
                clauses.append(clause)
                params.append(value)
        where = f" WHERE {' AND '.join(clauses)}" if clauses else ""
        sql = f"{LISTED}{where} ORDER BY id DESC LIMIT ?"
        params.append(max(0, limit) + 1)
        rows = await self._run(lambda conn: conn.execute(sql, params).fetchall())
        items = [listed_from_row(row) for row in rows]
        next_cursor = items[limit - 1].id if len(items) > limit > 0 else None
        return JobPage(items[: max(0, limit)], next_cursor)

    async def cancel(self, job_id: str) -> Job:
        def tx(conn: sqlite3.Connection) -> Job:
            now = float(self._clock())
            job = self._jobs_by_id(conn, [job_id]).get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            if job.status.finished:
                raise ConflictError(f"job {job_id} is already {job.status.value}")
            job.status = JobStatus.CANCELLED
            job.completed_at = now
            job.lease_owner = job.lease_expires_at = None
            conn.execute(SAVE_STATE, state_row(job))
            self._emit(conn, [("job_cancelled", job_id, now, {})])
            return job

        return await self._run(lambda conn: transaction(conn, lambda: tx(conn)))

    async def retry(self, job_id: str) -> Job:
        def tx(conn: sqlite3.Connection) -> Job:
            now = float(self._clock())
            job = self._jobs_by_id(conn, [job_id]).get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            reset_for_retry(job, now)
            conn.execute(SAVE_STATE, state_row(job))
            data = created_event_data(job.queue, job.type, retry=True)
            self._emit(conn, [("job_created", job_id, now, data)])
            return job

        def run(conn: sqlite3.Connection) -> Job:
            job = transaction(conn, lambda: tx(conn))
            wake(self._key)
            return job

        return await self._run(run)

    async def purge(self) -> int:
        def tx(conn: sqlite3.Connection) -> int:
            now = float(self._clock())
            removed = conn.execute(
                "DELETE FROM jobs WHERE completed_at IS NOT NULL AND completed_at <= ? "
                f"AND status IN {FINISHED}",
                (now - self.retention.result_ttl,),
            ).rowcount
            conn.execute("DELETE FROM idempotency WHERE expires_at <= ?", (now,))
            # A prefix of the feed, up to the first event young enough to keep (found in
            # id order: the scan stops there), so that what is held has no holes and
            # `read_events` can tell a trimmed cursor by the oldest id alone.
            conn.execute(
                "DELETE FROM events WHERE id < coalesce("
                "(SELECT id FROM events WHERE at >= ? ORDER BY id LIMIT 1), "
                "(SELECT max(id) FROM events) + 1)",
                (now - self.retention.events,),
            )
            return int(removed)

        return await self._run(lambda conn: transaction(conn, lambda: tx(conn)))

    async def queue_stats(self) -> list[QueueStats]:
        def read(
            conn: sqlite3.Connection,
        ) -> tuple[list[tuple[str, str, int]], list[tuple[str, int | None, int]]]:
            counts = conn.execute(
                "SELECT queue, CASE WHEN status = 'pending' AND run_at > ? THEN 'scheduled' "
                "ELSE status END AS state, count(*) FROM jobs GROUP BY queue, state",
                (float(self._clock()),),
            ).fetchall()
            settings = conn.execute(
                "SELECT name, max_length, paused FROM queues "
                "WHERE max_length IS NOT NULL OR paused = 1"
            ).fetchall()
            return counts, settings

        counts: dict[str, dict[str, Any]] = {}
        rows, settings = await self._run(read)
        for queue, state, count in rows:
            counts.setdefault(queue, {})[state] = count
        for queue, max_length, paused in settings:
            counts.setdefault(queue, {}).update(max_length=max_length, paused=bool(paused))
        return [QueueStats(name=name, **row) for name, row in sorted(counts.items())]

    # -- events ----------------------------------------------------------------------
    async def read_events(
        self, after: str | None, limit: int, *, allow_gap: bool = False
    ) -> list[Event]:
        number = parse_event_number(after)
        after = None if number is None else after
        start = number or 0

        def read(conn: sqlite3.Connection) -> tuple[list[_EventRow], int]:
            rows: list[_EventRow] = conn.execute(
                "SELECT id, type, job_id, at, data FROM events WHERE id > ? ORDER BY id LIMIT ?",
                (start, max(1, limit)),
            ).fetchall()
            if after is None or allow_gap or (rows and rows[0][0] == start + 1):
                return rows, 0
            return rows, _trimmed_after(conn, start)

        rows, lost = await self._run(read)
        events = [
            Event(f"{event_id:020d}", type_, job_id, at, loads(data))
            for event_id, type_, job_id, at, data in rows
        ]
        if lost:
            assert after is not None
            first = events[0] if events else None
            raise HistoryTruncatedError(
                after, first.id if first else None, first.at if first else None, lost
            )
        return events[: max(0, limit)]


def _trimmed_after(conn: sqlite3.Connection, start: int) -> int:
    """How many events numbered after ``start`` were trimmed from the feed.

    Event ids are AUTOINCREMENT: every id up to the sequence was issued, and the feed
    loses only its oldest events, so everything below the oldest held id is gone.
    """
    (oldest,) = conn.execute("SELECT min(id) FROM events").fetchone()
    if oldest is not None:
        gone = int(oldest) - 1
    else:
        row = conn.execute("SELECT seq FROM sqlite_sequence WHERE name = 'events'").fetchone()
        gone = int(row[0]) if row else 0
    return max(0, gone - start)
