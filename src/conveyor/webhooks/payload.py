"""What a webhook delivery sends, and the delivery state kept on the job."""

from __future__ import annotations

from typing import Any

import orjson

from conveyor.job import Job, JobStatus
from conveyor.wire import format_instant

#: Event types that end a job and trigger its webhook.
FINAL_EVENTS = frozenset({"job_completed", "job_failed", "job_cancelled"})


def message_id(job: Job) -> str:
    """The delivery id: stable across retries of one delivery. A job retried through the
    API and finished again makes a new delivery with a new id."""
    return f"msg_{job.id}_{int((job.completed_at or 0.0) * 1000)}"


def body(job: Job, sent_at: float) -> bytes:
    """``{jobId, status, result?, error?, completedAt, sentAt}`` as compact JSON."""
    data: dict[str, Any] = {"jobId": job.id, "status": job.status.value}
    if job.status is JobStatus.COMPLETED:
        data["result"] = job.result
    if job.error is not None and job.status is JobStatus.FAILED:
        data["error"] = job.error
    data["completedAt"] = format_instant(job.completed_at or sent_at)
    data["sentAt"] = format_instant(sent_at)
    return orjson.dumps(data)


def state(
    msg_id: str,
    kind: str,
    attempts: int,
    *,
    last_status: int | None = None,
    last_error: str | None = None,
    next_attempt_at: float | None = None,
    delivered_at: float | None = None,
) -> dict[str, Any]:
    """The ``webhook`` field of a job: ``{id, state, attempts, lastStatus, lastError,
    nextAttemptAt, deliveredAt}`` (never the secret)."""
    return {
        "id": msg_id,
        "state": kind,
        "attempts": attempts,
        "lastStatus": last_status,
        "lastError": last_error,
        "nextAttemptAt": None if next_attempt_at is None else format_instant(next_attempt_at),
        "deliveredAt": None if delivered_at is None else format_instant(delivered_at),
    }
