"""How a :class:`~conveyor.job.Job` is laid out in the SQLite ``jobs`` table.

JSON columns (args, kwargs, result, error, webhook) are orjson text; never pickle.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.backends._common import leave_out_large_result
from conveyor.job import Job, JobStatus
from conveyor.results import INLINE_RESULT_MAX
from conveyor.serialization import dumps, loads

COLUMNS = (
    "id, type, args, kwargs, queue, priority, status, progress, result, error, attempts, "
    "max_retries, timeout, created_at, run_at, started_at, completed_at, idempotency_key, "
    "callback_url, callback_secret, webhook, lease_owner, lease_expires_at"
)
SELECT = f"SELECT {COLUMNS} FROM jobs"
#: The size of a row's result, in bytes of JSON (NULL: no result).
_RESULT_BYTES = "coalesce(result_bytes, length(CAST(result AS BLOB)))"
#: A listing's columns: a result over INLINE_RESULT_MAX bytes is not read (NULL), and
#: the size follows the usual columns.
LISTED = (
    "SELECT "
    + COLUMNS.replace(
        "result,", f"CASE WHEN {_RESULT_BYTES} <= {INLINE_RESULT_MAX} THEN result END,", 1
    )
    + f", {_RESULT_BYTES} FROM jobs"
)
INSERT = f"INSERT INTO jobs ({COLUMNS}) VALUES ({', '.join('?' * 23)})"
SAVE_STATE = (
    "UPDATE jobs SET status = ?, progress = ?, result = ?, result_bytes = ?, error = ?, "
    "attempts = ?, run_at = ?, started_at = ?, completed_at = ?, lease_owner = ?, "
    "lease_expires_at = ? WHERE id = ?"
)
IDS = "SELECT value FROM json_each(?)"
FINISHED = "('completed', 'failed', 'cancelled')"


def _json(value: Any) -> str | None:
    return None if value is None else dumps(value).decode()


def _unjson(text: str | None) -> Any:
    return None if text is None else loads(text)


def job_from_row(row: Sequence[Any]) -> Job:
    return Job(
        id=row[0],
        type=row[1],
        args=loads(row[2]),
        kwargs=loads(row[3]),
        queue=row[4],
        priority=row[5],
        status=JobStatus(row[6]),
        progress=row[7],
        result=_unjson(row[8]),
        error=_unjson(row[9]),
        attempts=row[10],
        max_retries=row[11],
        timeout=row[12],
        created_at=row[13],
        run_at=row[14],
        started_at=row[15],
        completed_at=row[16],
        idempotency_key=row[17],
        callback_url=row[18],
        callback_secret=row[19],
        webhook=_unjson(row[20]),
        lease_owner=row[21],
        lease_expires_at=row[22],
    )


def job_to_row(job: Job) -> tuple[Any, ...]:
    return (
        job.id,
        job.type,
        dumps(job.args, what=f"arguments of job {job.id}").decode(),
        dumps(job.kwargs, what=f"arguments of job {job.id}").decode(),
        job.queue,
        job.priority,
        job.status.value,
        job.progress,
        _json(job.result),
        _json(job.error),
        job.attempts,
        job.max_retries,
        job.timeout,
        job.created_at,
        job.run_at,
        job.started_at,
        job.completed_at,
        job.idempotency_key,
        job.callback_url,
        job.callback_secret,
        _json(job.webhook),
        job.lease_owner,
        job.lease_expires_at,
    )


def listed_from_row(row: Sequence[Any]) -> Job:
    """A job of a :data:`LISTED` row (a large result left out)."""
    return leave_out_large_result(job_from_row(row), row[-1])


def state_row(job: Job, result_json: bytes | None = None) -> tuple[Any, ...]:
    """The :data:`SAVE_STATE` parameters of ``job``.

    Args:
        job: the job.
        result_json: its result as JSON when the caller has it (a completion);
            otherwise ``job.result`` is encoded.
    """
    if result_json is None and job.result is not None:
        result_json = dumps(job.result, what=f"result of job {job.id}")
    return (
        job.status.value,
        job.progress,
        None if result_json is None else result_json.decode(),
        None if result_json is None else len(result_json),
        _json(job.error),
        job.attempts,
        job.run_at,
        job.started_at,
        job.completed_at,
        job.lease_owner,
        job.lease_expires_at,
        job.id,
    )
