"""The seam every store implements.

A backend keeps job records and moves jobs through their states atomically. Every
method that touches many jobs takes them as a batch, so a worker pays one round trip per
batch, never per job. All instants are float seconds since the Unix epoch, judged by the
store's own clock where it has one.

Producers call :meth:`Backend.enqueue`; workers call :meth:`Backend.fetch` (which leases
jobs to them, reclaiming jobs whose lease has expired), :meth:`Backend.renew` (heartbeat)
and :meth:`Backend.complete` (fenced by owner and attempt, so a worker that lost its lease
cannot overwrite the outcome of the worker that took the job over).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol

from conveyor.job import Job, JobStatus


class OutcomeKind(StrEnum):
    """What a worker reports about one attempt."""

    COMPLETED = "completed"  # result stored, job done
    FAILED = "failed"  # no retries left or not retryable: dead-letter
    RETRY = "retry"  # back to pending at ``retry_at``; the attempt counts
    RELEASED = "released"  # returned unfinished (shutdown); the attempt does not count


@dataclass(frozen=True, slots=True)
class Outcome:
    """The end of one attempt, as reported by the worker that ran it.

    ``worker_id`` and ``attempt`` fence the report: it is applied only if the job is
    still running, leased to that worker, on that attempt.

    ``result_json`` is ``result`` as JSON when the worker has encoded it already (it
    does, measuring it against ``CONVEYOR_MAX_RESULT_BYTES``): stores keep these bytes
    instead of encoding ``result`` again.
    """

    job_id: str
    worker_id: str
    attempt: int
    kind: OutcomeKind
    result: Any = None
    error: dict[str, Any] | None = None
    retry_at: float | None = None
    result_json: bytes | None = None


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a store keeps what no longer changes; given when the store is built, so
    that every process opening it applies the same values from its first write.

    Args:
        result_ttl: seconds a finished job's record (and result) is kept after it
            finished (``CONVEYOR_RESULT_TTL_SECONDS``).
        events: seconds an event stays in the event feed (``CONVEYOR_EVENT_RETENTION_SECONDS``),
            so that SSE clients and the webhook deliverer can resume.
    """

    result_ttl: float = 86_400.0
    events: float = 3_600.0


@dataclass(frozen=True, slots=True)
class Event:
    """One transition of one job, in the store's event feed.

    ``id`` is an opaque cursor, increasing within the feed.
    """

    id: str
    type: str
    job_id: str
    at: float
    data: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class JobFilter:
    """Filters for :meth:`Backend.list_jobs`; ``None`` means any."""

    status: JobStatus | None = None
    type: str | None = None
    queue: str | None = None


@dataclass(frozen=True, slots=True)
class JobPage:
    """One page of a listing; pass ``next_cursor`` back for the next page."""

    items: list[Job]
    next_cursor: str | None


@dataclass(frozen=True, slots=True)
class QueueStats:
    """Counts of one queue's jobs by state."""

    name: str
    pending: int = 0
    scheduled: int = 0
    running: int = 0
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    paused: bool = False
    max_length: int | None = None


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The stored job, and whether this call created it (False: idempotency key hit)."""

    job: Job
    created: bool


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A live worker process, as it registers itself with its heartbeat."""

    id: str
    host: str
    pid: int
    queues: tuple[str, ...]
    concurrency: int
    in_flight: int
    started_at: float
    last_heartbeat: float


class MisfirePolicy(StrEnum):
    """What a schedule does about fire times missed while no scheduler ran."""

    SKIP = "skip"  # forget them; fire next at the next time after now
    RUN_ONCE = "run_once"  # fire once for all of them (if within max drift), then go on


class OverlapPolicy(StrEnum):
    """What a fire does while the schedule's previous job is still pending or running."""

    ALLOW = "allow"
    SKIP = "skip"


@dataclass(slots=True)
class Schedule:
    """A recurring job: a cron expression or a fixed interval, in a time zone.

    ``source`` is ``"code"`` for schedules declared with ``@app.cron`` and ``"api"`` for
    those created at run time. ``next_run_at``, ``last_run_at`` and ``last_job_id`` are
    kept by the scheduler.
    """

    id: str
    type: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    cron: str | None = None
    interval: float | None = None
    timezone: str = "UTC"
    enabled: bool = True
    queue: str | None = None
    priority: int | None = None
    jitter: float = 0.0
    misfire_policy: MisfirePolicy = MisfirePolicy.RUN_ONCE
    max_drift: float = 3600.0
    overlap: OverlapPolicy = OverlapPolicy.ALLOW
    source: str = "api"
    created_at: float = 0.0
    updated_at: float = 0.0
    next_run_at: float | None = None
    last_run_at: float | None = None
    last_job_id: str | None = None


@dataclass(frozen=True, slots=True)
class Fire:
    """One fire of a schedule, recorded after its job was enqueued.

    ``job_id`` None records a fire that made no job (overlap, a full queue, missed
    times skipped): only ``next_run_at`` changes.
    """

    schedule_id: str
    fired_at: float
    next_run_at: float | None
    job_id: str | None


class LeaderLock(Protocol):
    """A named lease held by one owner at a time, with a fencing token."""

    async def acquire_lock(self, name: str, owner: str, ttl: float) -> int | None:
        """Take the lock, or extend it when ``owner`` already holds it.

        Returns the fencing token — it increases every time the lock changes hands — or
        None while another owner holds an unexpired lock.
        """

    async def release_lock(self, name: str, owner: str) -> None:
        """Give the lock up if ``owner`` holds it (no-op otherwise)."""


class QueueControl(Protocol):
    """Per-queue settings kept in the store, so every process agrees on them."""

    async def configure_queue(self, queue: str, *, max_length: int | None) -> None:
        """Set (or clear, with None) the most pending jobs a queue may hold.

        ``enqueue`` then refuses a batch that would take the queue's pending and
        scheduled jobs past it, atomically, with ``QueueFullError``.
        """

    async def pause_queue(self, queue: str) -> None:
        """Stop handing out the queue's jobs (``fetch`` skips it); pending jobs stay."""

    async def resume_queue(self, queue: str) -> None:
        """Hand out the queue's jobs again."""


class WorkerRegistry(Protocol):
    """Live workers, each kept by its own heartbeat."""

    async def register_worker(self, info: WorkerInfo, ttl: float) -> None:
        """Add or refresh a worker; it disappears ``ttl`` seconds after its last refresh."""

    async def unregister_worker(self, worker_id: str) -> None:
        """Remove a worker at once (clean shutdown)."""

    async def list_workers(self) -> list[WorkerInfo]:
        """Workers whose registration has not expired."""


class DeliveryLog(Protocol):
    """State kept for background deliverers (webhooks): per-job state and cursors."""

    async def record_webhook(self, job_id: str, state: dict[str, Any]) -> None:
        """Store a job's webhook delivery state (shown on the job as ``webhook``)."""

    async def get_cursor(self, name: str) -> str | None:
        """A named position in the event feed, or None."""

    async def set_cursor(self, name: str, value: str) -> None:
        """Remember a named position in the event feed."""


class ScheduleStore(Protocol):
    """Schedules, changed at run time and read by every scheduler replica."""

    async def save_schedule(self, schedule: Schedule) -> Schedule:
        """Insert or replace a schedule (by id); returns it as stored."""

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        """One schedule, or None."""

    async def list_schedules(self) -> list[Schedule]:
        """Every schedule, ordered by id."""

    async def delete_schedule(self, schedule_id: str) -> bool:
        """Remove a schedule; False when there was none."""

    async def schedules_version(self) -> int:
        """A number that changes whenever any schedule is saved or deleted (cheap)."""

    async def record_fires(self, fires: Sequence[Fire]) -> None:
        """Record fires in one round trip: ``last_run_at``, ``last_job_id``, ``next_run_at``.

        Recording a fire does not change :meth:`schedules_version`.
        """


class Backend(LeaderLock, QueueControl, WorkerRegistry, DeliveryLog, ScheduleStore, Protocol):
    """A job store. See the module docstring for the contract."""

    url: str

    async def open(self) -> None:
        """Connect and prepare the store (create or migrate schema). Idempotent."""

    async def aclose(self) -> None:
        """Release connections and threads. Idempotent."""

    async def ping(self) -> None:
        """Return when the store answers.

        Raises:
            BackendUnavailableError: it does not.
        """

    async def now(self) -> float:
        """The store's clock: the one time every process judges due-ness by."""

    # -- producing -------------------------------------------------------------------
    async def enqueue(self, jobs: Sequence[Job], *, idempotency_ttl: float) -> list[EnqueueResult]:
        """Store new pending jobs atomically, in one round trip.

        A job whose ``idempotency_key`` is already remembered is not stored; the result
        holds the existing job and ``created=False``. Each created job gets a
        ``job_created`` event. ``created_at`` and ``run_at`` of zero are set to now.
        """

    # -- consuming -------------------------------------------------------------------
    async def fetch(
        self, queues: Sequence[str], worker_id: str, limit: int, lease_seconds: float
    ) -> list[Job]:
        """Lease up to ``limit`` due jobs to ``worker_id``, highest priority first.

        Jobs whose lease has expired (their worker died) are handed out again first. Each
        returned job is ``running`` with ``attempts`` incremented and a lease until now +
        ``lease_seconds``. A reclaimed job whose attempts already exceed its retry budget
        is moved to ``failed`` (reason ``lease_expired``) instead of being handed out.
        """

    async def renew(
        self, worker_id: str, leases: Mapping[str, int], lease_seconds: float
    ) -> set[str]:
        """Extend the leases of running jobs (``{job_id: attempt}``).

        Returns the ids the worker must stop: jobs no longer leased to it on that
        attempt (cancelled, or taken over after its lease expired).
        """

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        """Apply attempt outcomes in one round trip; one flag per outcome.

        A flag is False when the fence refused the outcome (the job is no longer
        running under that worker and attempt). A ``job_completed`` event carries the
        result up to :data:`~conveyor.results.INLINE_RESULT_MAX` bytes of JSON; past
        that, ``resultOmitted`` and ``resultBytes`` instead (the record keeps it).
        """

    async def set_progress(self, job_id: str, attempt: int, progress: int) -> bool:
        """Record progress (0-100) of a running attempt; False when fenced out."""

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a job may have become fetchable, or after ``timeout`` seconds.

        Used by idle workers; returns early when a job is enqueued or falls due.
        """

    # -- records ---------------------------------------------------------------------
    async def get_job(self, job_id: str) -> Job | None:
        """Return a job's record, or None."""

    async def list_jobs(
        self, filter: JobFilter, *, limit: int, cursor: str | None = None
    ) -> JobPage:
        """List jobs, newest first.

        A result over :data:`~conveyor.results.INLINE_RESULT_MAX` bytes of JSON is left
        out (and, where the store allows, not even read): its job has ``result`` None
        and ``omitted_result_bytes`` its size. :meth:`get_job` has it.
        """

    async def cancel(self, job_id: str) -> Job:
        """Cancel a pending or running job and return its record.

        Raises:
            JobNotFoundError: no such job.
            ConflictError: the job is already finished.
        """

    async def retry(self, job_id: str) -> Job:
        """Send a failed or cancelled job back to pending with a fresh retry budget.

        Raises:
            JobNotFoundError: no such job.
            ConflictError: the job is not failed or cancelled.
        """

    async def purge(self) -> int:
        """Delete finished jobs older than the store's ``Retention.result_ttl`` and expired
        idempotency keys, and trim events older than ``Retention.events`` from the feed.
        Returns the number of jobs deleted."""

    async def queue_stats(self) -> list[QueueStats]:
        """Counts per queue."""

    # -- events ----------------------------------------------------------------------
    async def read_events(
        self, after: str | None, limit: int, *, allow_gap: bool = False
    ) -> list[Event]:
        """Events after the cursor ``after`` (from the oldest retained when None).

        A cursor this feed never issued is read from where it would sit (nothing is
        missing unless events after it were trimmed).

        Args:
            after: the id of the last event the reader has, or None.
            limit: the most events to return.
            allow_gap: when events after ``after`` were trimmed (retention), return the
                events still held after it instead of raising.

        Raises:
            HistoryTruncatedError: events after ``after`` were trimmed (and not
                ``allow_gap``); it names the oldest event still held.
        """
