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
from typing import Any, Protocol, runtime_checkable

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
    """

    job_id: str
    worker_id: str
    attempt: int
    kind: OutcomeKind
    result: Any = None
    error: dict[str, Any] | None = None
    retry_at: float | None = None


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


@dataclass(frozen=True, slots=True)
class EnqueueResult:
    """The stored job, and whether this call created it (False: idempotency key hit)."""

    job: Job
    created: bool


@runtime_checkable
class Backend(Protocol):
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
        running under that worker and attempt).
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
        """List jobs, newest first."""

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

    async def purge(self, result_ttl: float) -> int:
        """Delete finished jobs older than ``result_ttl`` and expired idempotency keys,
        and trim the event feed. Returns the number of jobs deleted."""

    async def queue_stats(self) -> list[QueueStats]:
        """Counts per queue."""

    # -- events ----------------------------------------------------------------------
    async def read_events(self, after: str | None, limit: int) -> list[Event]:
        """Events after the cursor ``after`` (from the oldest retained when None)."""
