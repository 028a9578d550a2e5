"""What a webhook delivery sends, and the delivery state kept on the job."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from conveyor.job import Job, JobStatus

#: Event types that end a job and trigger its webhook.
FINAL_EVENTS = frozenset({"job_completed", "job_failed", "job_cancelled"})


def instant(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds (as the API shows instants)."""
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_instant(text: Any) -> float | None:
    """The inverse of :func:`instant`; None for anything else."""
    if not isinstance(text, str):
        return None
    try:
        return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


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
    data["completedAt"] = instant(job.completed_at or sent_at)
    data["sentAt"] = instant(sent_at)
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
        "nextAttemptAt": None if next_attempt_at is None else instant(next_attempt_at),
        "deliveredAt": None if delivered_at is None else instant(delivered_at),
    }
