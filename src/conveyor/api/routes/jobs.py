"""``/api/v1/jobs``: submit, inspect, list, cancel and retry jobs."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Path, Query, Request
from starlette.responses import Response

from conveyor.api.deps import get_conveyor, open_backend
from conveyor.api.errors import JSONResponse, shorten
from conveyor.api.schemas import (
    ERROR_DEFAULT,
    JOB_ID,
    JOB_LINKS,
    JobList,
    JobOut,
    SubmitJob,
    SubmittedJob,
    error_responses,
)
from conveyor.api.submission import Submitter
from conveyor.app import Conveyor
from conveyor.backends.base import JobFilter
from conveyor.errors import JobNotFoundError
from conveyor.job import Job, JobStatus
from conveyor.limits import IDEMPOTENCY_KEY_MAX, QUEUE_NAME_MAX
from conveyor.wire import render_job

router = APIRouter(prefix="/api/v1/jobs", tags=["jobs"], responses=ERROR_DEFAULT)

App = Annotated[Conveyor, Depends(get_conveyor)]
JobId = Annotated[str, Path(description="the job's id")]


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(
        *statuses, s404="no such job", s409="the job's state does not allow this"
    )


def _checked_id(job_id: str) -> str:
    # An id that cannot be one of ours is simply not found; the store never sees it.
    if not JOB_ID.fullmatch(job_id):
        raise JobNotFoundError(shorten(job_id))
    return job_id


_SUBMIT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": SubmitJob.model_json_schema(by_alias=True)}},
    }
}


@router.post(
    "",
    status_code=202,
    response_model=SubmittedJob,
    summary="Submit a job",
    openapi_extra=_SUBMIT_BODY,
    responses={
        202: {"links": JOB_LINKS},
        200: {
            "model": SubmittedJob,
            "description": "the idempotency key names an existing job",
            "links": JOB_LINKS,
        },
        **_errors(401, 413, 415, 422, 429, 503),
    },
)
async def submit_job(
    request: Request,
    idempotency_key: Annotated[
        str | None,
        Header(alias="Idempotency-Key", min_length=1, max_length=IDEMPOTENCY_KEY_MAX),
    ] = None,
) -> Response:
    """Enqueue a job of a registered task type.

    Answers 202 with ``Location`` for a new job; 200 with the same ``jobId`` when the
    idempotency key (header ``Idempotency-Key`` or body ``idempotencyKey``) was seen.
    """
    submitter: Submitter = request.app.state.submitter
    return await submitter.answer_http(
        request.scope, request.headers.get("content-type"), request.body, idempotency_key
    )


@router.get(
    "",
    response_model=JobList,
    summary="List jobs",
    responses=_errors(401, 422, 503),
)
async def list_jobs(
    conveyor: App,
    status: Annotated[JobStatus | None, Query(description="only jobs in this state")] = None,
    type: Annotated[str | None, Query(max_length=200, description="only this task type")] = None,
    queue: Annotated[
        str | None, Query(max_length=QUEUE_NAME_MAX, description="only this queue")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=500, description="page size")] = 50,
    cursor: Annotated[
        str | None,
        Query(max_length=200, pattern=r"^[A-Za-z0-9_.:=-]+$", description="from nextCursor"),
    ] = None,
) -> Response:
    """Jobs, newest first, one page at a time. A result over 4 KiB of JSON is left out
    of its item (``resultOmitted``, ``resultBytes``): GET the job for it."""
    backend = await open_backend(conveyor)
    page = await backend.list_jobs(
        JobFilter(status=status, type=type, queue=queue), limit=limit, cursor=cursor
    )
    return JSONResponse(
        {"items": [render_job(job) for job in page.items], "nextCursor": page.next_cursor}
    )


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="Get a job",
    responses={200: {"links": JOB_LINKS}, **_errors(401, 404, 422, 503)},
)
async def get_job(conveyor: App, job_id: JobId) -> Response:
    """A job's record: status, progress, result or error, timings."""
    checked = _checked_id(job_id)
    backend = await open_backend(conveyor)
    job: Job | None = await backend.get_job(checked)
    if job is None:
        raise JobNotFoundError(checked)
    return JSONResponse(render_job(job))


@router.delete(
    "/{job_id}",
    response_model=JobOut,
    summary="Cancel a job",
    responses={200: {"links": JOB_LINKS}, **_errors(401, 404, 409, 422, 503)},
)
async def cancel_job(conveyor: App, job_id: JobId) -> Response:
    """Cancel a pending or running job; 409 if it has already finished."""
    checked = _checked_id(job_id)
    backend = await open_backend(conveyor)
    job = await backend.cancel(checked)
    return JSONResponse(render_job(job))


@router.post(
    "/{job_id}/retry",
    status_code=202,
    response_model=JobOut,
    summary="Retry a job",
    responses={202: {"links": JOB_LINKS}, **_errors(401, 404, 409, 422, 503)},
)
async def retry_job(conveyor: App, job_id: JobId) -> Response:
    """Send a failed or cancelled job back to pending; 409 for any other state."""
    checked = _checked_id(job_id)
    backend = await open_backend(conveyor)
    job = await backend.retry(checked)
    return JSONResponse(render_job(job), status_code=202)
