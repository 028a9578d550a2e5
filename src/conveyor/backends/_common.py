"""Pieces every backend shares: event payloads and cursors, outcome bookkeeping."""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections.abc import Callable
from typing import Any

from conveyor.backends.base import Outcome, OutcomeKind, WorkerInfo
from conveyor.errors import ConflictError, ValidationError
from conveyor.job import Job, JobStatus, task_error
from conveyor.results import INLINE_RESULT_MAX, inline_result
from conveyor.serialization import dumps, loads

#: How many events a store's feed keeps at least, so SSE clients can resume.
EVENT_RETENTION = 100_000

#: The highest number a numbered event feed (memory, SQLite) can reach: SQLite's
#: INTEGER is a signed 64-bit number.
MAX_EVENT_NUMBER = 2**63 - 1

_EVENT_NUMBER = re.compile(r"0*([0-9]{1,19})")

#: Seconds a producer refused by a full queue is told to wait (``Retry-After``).
QUEUE_FULL_RETRY_AFTER = 1.0

STATUS_OF_OUTCOME = {
    OutcomeKind.COMPLETED: JobStatus.COMPLETED,
    OutcomeKind.FAILED: JobStatus.FAILED,
    OutcomeKind.RETRY: JobStatus.PENDING,
    OutcomeKind.RELEASED: JobStatus.PENDING,
}

EVENT_OF_OUTCOME = {
    OutcomeKind.COMPLETED: "job_completed",
    OutcomeKind.FAILED: "job_failed",
    OutcomeKind.RETRY: "job_retrying",
    OutcomeKind.RELEASED: "job_released",
}


def invalid_event_cursor(cursor: str, why: str) -> ValidationError:
    """The error for an event cursor this store cannot have issued."""
    clipped = cursor if len(cursor) <= 40 else cursor[:40] + "…"
    return ValidationError(f"invalid event cursor {clipped!r}: {why}", {"cursor": clipped})


def parse_event_number(cursor: str | None) -> int | None:
    """The position after which to read a numbered event feed (memory, SQLite).

    Ids are the feed's row numbers, written as decimal digits; ``None`` or ``""`` reads
    from the start. A number beyond every id is a cursor after the end.

    Raises:
        ValidationError: not decimal digits, or beyond :data:`MAX_EVENT_NUMBER`.
    """
    if not cursor:
        return None
    match = _EVENT_NUMBER.fullmatch(cursor)
    if match is None:
        if cursor.isascii() and cursor.isdigit():
            raise invalid_event_cursor(cursor, f"beyond {MAX_EVENT_NUMBER}")
        raise invalid_event_cursor(cursor, "not a number")
    number = int(match[1])
    if number > MAX_EVENT_NUMBER:
        raise invalid_event_cursor(cursor, f"beyond {MAX_EVENT_NUMBER}")
    return number


def encoded_result(outcome: Outcome) -> bytes:
    """A completed outcome's result as JSON: the worker's bytes, else encoded here."""
    if outcome.result_json is not None:
        return outcome.result_json
    return dumps(outcome.result, what=f"result of job {outcome.job_id}")


def outcome_event_data(
    outcome: Outcome, job: Job, result_json: bytes | None = None
) -> dict[str, Any]:
    """The payload of the event an outcome publishes.

    Args:
        outcome: the outcome.
        job: its job's record.
        result_json: the result's JSON, when the caller has it (a completion's size
            decides whether the event carries the result, see :mod:`conveyor.results`).
    """
    data: dict[str, Any] = {"attempt": outcome.attempt, "queue": job.queue, "taskType": job.type}
    if outcome.kind is OutcomeKind.COMPLETED:
        size = len(encoded_result(outcome) if result_json is None else result_json)
        data.update(inline_result(outcome.result, size))
    elif outcome.kind is OutcomeKind.FAILED:
        data["error"] = outcome.error
    elif outcome.kind is OutcomeKind.RETRY:
        data["error"] = outcome.error
        data["runAt"] = outcome.retry_at
    return data


def leave_out_large_result(job: Job, size: int | None) -> Job:
    """``job`` as a listing shows it: a result of more than
    :data:`~conveyor.results.INLINE_RESULT_MAX` bytes (``size``) left out."""
    if size is not None and size > INLINE_RESULT_MAX:
        job.result = None
        job.omitted_result_bytes = size
    return job


def apply_outcome(job: Job, outcome: Outcome, now: float) -> None:
    """Move ``job`` (already checked against the fence) to the state ``outcome`` reports."""
    job.lease_owner = None
    job.lease_expires_at = None
    kind = outcome.kind
    job.status = STATUS_OF_OUTCOME[kind]
    if kind is OutcomeKind.COMPLETED:
        job.result = outcome.result
        job.error = None
        job.progress = 100
        job.completed_at = now
    elif kind is OutcomeKind.FAILED:
        job.error = outcome.error
        job.completed_at = now
    elif kind is OutcomeKind.RETRY:
        job.error = outcome.error
        job.run_at = outcome.retry_at if outcome.retry_at is not None else now
    else:  # released on shutdown: this attempt does not count against the budget
        job.attempts = max(0, job.attempts - 1)
        job.run_at = now


def lease_expired_error(attempts: int) -> dict[str, Any]:
    """The error of a job whose worker died more often than its retries allow."""
    return task_error(
        f"worker lost the job {attempts} times (crashed or killed); giving up",
        reason="lease_expired",
        retryable=False,
    )


def worker_to_json(info: WorkerInfo) -> str:
    """A worker's registration as JSON (SQLite and Redis keep it so)."""
    return dumps(
        {
            "id": info.id,
            "host": info.host,
            "pid": info.pid,
            "queues": list(info.queues),
            "concurrency": info.concurrency,
            "inFlight": info.in_flight,
            "startedAt": info.started_at,
            "lastHeartbeat": info.last_heartbeat,
        }
    ).decode()


def worker_from_json(text: str) -> WorkerInfo | None:
    """The registration back; None for a value that is not one."""
    try:
        d: Any = loads(text)
        return WorkerInfo(
            id=str(d["id"]),
            host=str(d["host"]),
            pid=int(d["pid"]),
            queues=tuple(str(q) for q in d["queues"]),
            concurrency=int(d["concurrency"]),
            in_flight=int(d["inFlight"]),
            started_at=float(d["startedAt"]),
            last_heartbeat=float(d["lastHeartbeat"]),
        )
    except Exception:  # written by hand or by another version: not a live worker
        return None


def accept_new(job: Job, now: float) -> Job:
    """The record a store keeps of a new job: pending, no attempt yet, created (and due)
    ``now`` where the caller left those times unset."""
    stored = job.copy(status=JobStatus.PENDING, attempts=0)
    stored.created_at = stored.created_at or now
    stored.run_at = stored.run_at or now
    return stored


def created_event_data(queue: str, task_type: str, *, retry: bool = False) -> dict[str, Any]:
    """The payload of a ``job_created`` event (``retry``: sent back by a retry)."""
    data: dict[str, Any] = {"queue": queue, "taskType": task_type}
    if retry:
        data["retry"] = True
    return data


def reset_for_retry(job: Job, now: float) -> None:
    """Send a failed or cancelled ``job`` back to pending with a fresh retry budget.

    Raises:
        ConflictError: the job is neither failed nor cancelled.
    """
    if job.status not in (JobStatus.FAILED, JobStatus.CANCELLED):
        raise ConflictError(f"job {job.id} is {job.status.value}, not failed or cancelled")
    job.status = JobStatus.PENDING
    job.attempts = 0
    job.error = None
    job.progress = 0
    job.completed_at = job.started_at = None
    job.run_at = now


async def claim_or_give_back(
    claim: asyncio.Future[list[Job]],
    worker_id: str,
    give_back: Callable[[list[Outcome]], object],
) -> list[Job]:
    """Await a fetch that, once started, commits whatever its caller does.

    If the caller is cancelled meanwhile, the jobs the claim leased are handed back with
    ``give_back`` (RELEASED outcomes) as soon as it finishes, rather than staying leased
    to nobody until their leases expire.
    """
    try:
        return await asyncio.shield(claim)
    except asyncio.CancelledError:

        def release(done: asyncio.Future[list[Job]]) -> None:
            if done.cancelled() or done.exception() is not None or not done.result():
                return
            outcomes = [
                Outcome(job.id, worker_id, job.attempts, OutcomeKind.RELEASED)
                for job in done.result()
            ]
            with contextlib.suppress(RuntimeError):  # closing: the leases expire instead
                give_back(outcomes)

        claim.add_done_callback(release)
        raise
