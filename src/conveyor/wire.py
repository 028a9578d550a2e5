"""How Conveyor's records look as JSON to the outside: the HTTP API, the event stream,
the WebSocket and webhooks all write them through these functions.

Instants are RFC 3339 in UTC with milliseconds (``2030-01-01T00:00:00.000Z``); keys are
camelCase; a job never shows its callback secret.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from conveyor.job import Job, JobStatus
from conveyor.results import omitted_result

#: The instants a job may be scheduled at: from the epoch to the end of year 9998.
_MIN_INSTANT = datetime(1970, 1, 1, tzinfo=UTC)
_MAX_INSTANT = datetime(9999, 1, 1, tzinfo=UTC)
_RFC3339 = re.compile(
    r"\d{4}-\d{2}-\d{2}[Tt ]\d{2}:\d{2}:\d{2}(\.\d{1,9})?([Zz]|[+-]\d{2}:\d{2})", re.ASCII
)


def format_instant(ts: float) -> str:
    """Epoch seconds as RFC 3339 UTC with milliseconds: ``2030-01-01T00:00:00.000Z``.

    Times beyond what a datetime holds are clamped to its range, never an error.
    """
    try:
        instant = datetime.fromtimestamp(ts, UTC)
    except (OverflowError, OSError, ValueError):
        instant = datetime.max.replace(tzinfo=UTC) if ts > 0 else datetime.min.replace(tzinfo=UTC)
    return instant.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_instant(value: str) -> float:
    """An RFC 3339 instant (its offset required) as epoch seconds; the inverse of
    :func:`format_instant`.

    Raises:
        ValueError: not RFC 3339, or outside 1970-9998.
    """
    if not _RFC3339.fullmatch(value):
        raise ValueError("must be an RFC 3339 instant with an offset, e.g. 2030-01-01T00:00:00Z")
    try:
        instant = datetime.fromisoformat(value.upper().replace(" ", "T"))
        if not _MIN_INSTANT <= instant < _MAX_INSTANT:
            raise ValueError("must be between 1970 and 9999")
    except (ValueError, OverflowError) as exc:
        raise ValueError(f"invalid instant: {exc}") from None
    return instant.timestamp()


def optional_instant(ts: float | None) -> str | None:
    """:func:`format_instant`, or None for None."""
    return None if ts is None else format_instant(ts)


def render_parameters(args: Sequence[Any], kwargs: dict[str, Any]) -> Any:
    """Arguments as submitted: an object of keyword arguments, or an array."""
    if args and not kwargs:
        return list(args)
    return dict(kwargs)


def render_accepted(job: Job) -> dict[str, Any]:
    """The answer to a submission: ``{jobId, status, createdAt}``."""
    return {
        "jobId": job.id,
        "status": job.status.value,
        "createdAt": format_instant(job.created_at),
    }


def render_job(job: Job) -> dict[str, Any]:
    """A job record (never its callback secret)."""
    out: dict[str, Any] = {
        "jobId": job.id,
        "type": job.type,
        "status": job.status.value,
        "queue": job.queue,
        "priority": job.priority,
        "progress": job.progress,
        "parameters": render_parameters(job.args, job.kwargs),
        "attempts": job.attempts,
        "maxRetries": job.max_retries,
        "createdAt": format_instant(job.created_at),
        "runAt": format_instant(job.run_at),
    }
    if job.args and job.kwargs:  # positional-only and keyword arguments together
        out["args"] = list(job.args)
    if job.omitted_result_bytes is not None:  # a listing left a large result out
        out.update(omitted_result(job.omitted_result_bytes))
    elif job.status is JobStatus.COMPLETED:
        out["result"] = job.result
    if job.error is not None:
        out["error"] = job.error
    if job.timeout is not None:
        out["timeout"] = job.timeout
    if job.started_at is not None:
        out["startedAt"] = format_instant(job.started_at)
    if job.completed_at is not None:
        out["completedAt"] = format_instant(job.completed_at)
    if job.idempotency_key is not None:
        out["idempotencyKey"] = job.idempotency_key
    if job.callback_url is not None:
        out["callbackUrl"] = job.callback_url
    if job.webhook is not None:
        out["webhook"] = job.webhook
    return out
