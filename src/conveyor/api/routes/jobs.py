"""``/api/v1/jobs``: submit, inspect, list, cancel and retry jobs."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from urllib.parse import urlsplit

import pydantic
from fastapi import APIRouter, Depends, Header, Path, Query, Request
from starlette.datastructures import State
from starlette.responses import Response
from starlette.types import Scope

from conveyor.addresses import forbidden_reason, literal_ip
from conveyor.api.batching import SubmitBatcher
from conveyor.api.bodies import read_json_body
from conveyor.api.consumers import ConsumerWatch
from conveyor.api.deps import get_conveyor, open_backend
from conveyor.api.errors import JSONResponse, shorten, validation_error
from conveyor.api.params import ParameterChecker
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
from conveyor.app import Conveyor
from conveyor.backends.base import EnqueueResult, JobFilter
from conveyor.errors import JobNotFoundError, ValidationError
from conveyor.job import Job, JobStatus
from conveyor.limits import IDEMPOTENCY_KEY_MAX, QUEUE_NAME_MAX
from conveyor.task import make_job_options
from conveyor.wire import render_accepted, render_job

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


async def _read_submission(
    content_type: str | None, read_body: Callable[[], Awaitable[bytes]]
) -> SubmitJob:
    payload = await read_json_body(content_type, read_body)
    return parse_submission(payload, "the request body", ("body",))


def parse_submission(payload: Any, what: str, loc: tuple[str, ...]) -> SubmitJob:
    """Validate a decoded submission (an HTTP body, or a WebSocket message's ``job``).

    Args:
        payload: the decoded JSON.
        what: how to name it in messages ("the request body").
        loc: where it sits, as the prefix of each field error's ``loc``.

    Raises:
        ValidationError: not an object, or a field is invalid.
    """
    if not isinstance(payload, dict):
        raise ValidationError(f"{what} must be a JSON object", {"errors": []})
    try:
        return SubmitJob.model_validate(payload)
    except pydantic.ValidationError as exc:
        raise validation_error(exc, "invalid job submission", loc) from None


async def enqueue_submission(
    conveyor: Conveyor,
    checker: ParameterChecker,
    submission: SubmitJob,
    idempotency_key: str | None = None,
    batcher: SubmitBatcher | None = None,
    watch: ConsumerWatch | None = None,
) -> EnqueueResult:
    """Check a submission against its task and store the job (or find the existing one).

    With ``batcher``, the job is stored together with concurrent submits (group commit);
    with ``watch``, a job accepted onto a queue no live worker consumes is logged.

    Raises:
        UnknownTaskError, InvalidArgumentsError, SerializationError, ValidationError,
        QueueFullError, BackendUnavailableError
    """
    task = conveyor.get_task(submission.type)
    args, kwargs = checker.check(task, submission.parameters)
    if submission.callback_url is not None and not conveyor.settings.webhook_allow_private:
        _check_callback_target(submission.callback_url)
    options = make_job_options(
        delay=submission.delay,
        run_at=submission.run_at_timestamp(),
        priority=submission.priority,
        idempotency_key=idempotency_key,
        queue=submission.queue,
        retries=submission.max_retries,
        timeout=submission.timeout,
        callback_url=submission.callback_url,
        callback_secret=submission.callback_secret,
    )
    job = task.build_job(args, kwargs, options, time.time())
    if batcher is not None:
        result = await batcher.enqueue(job)
    else:
        (result,) = await conveyor.enqueue_jobs([job])
    if watch is not None and result.created:
        watch.accepted(await conveyor.backend(), job.queue)
    return result


def _check_callback_target(url: str) -> None:
    """Refuse at once a callback to a literal address the deliverer would refuse (any
    spelling: ``127.1``, ``2130706433``, ``[::ffff:7f00:1]``). Host names are resolved
    and checked when delivering, on the address actually connected to."""
    ip = literal_ip(urlsplit(url).hostname or "")
    reason = None if ip is None else forbidden_reason(ip)
    if reason is not None:
        raise ValidationError(
            f"callbackUrl points to a {reason} address ({ip}); webhooks go to public "
            "addresses only unless CONVEYOR_WEBHOOK_ALLOW_PRIVATE=1",
            {"errors": [{"loc": ["body", "callbackUrl"], "message": f"{reason} address"}]},
        )


def _idempotency_key(header: str | None, submission: SubmitJob) -> str | None:
    body = submission.idempotency_key
    if header is not None and body is not None and header != body:
        raise ValidationError(
            "the Idempotency-Key header and idempotencyKey differ",
            {"errors": [{"loc": ["header", "Idempotency-Key"], "message": "differs from body"}]},
        )
    return header if header is not None else body


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
    return await submit(
        request.app.state,
        request.scope,
        request.headers.get("content-type"),
        request.body,
        idempotency_key,
    )


async def submit(
    state: State,
    scope: Scope,
    content_type: str | None,
    read_body: Callable[[], Awaitable[bytes]],
    idempotency_key: str | None,
) -> Response:
    """Read, check and store one submission; the answer to ``POST /api/v1/jobs``.

    Shared by the route and the ASGI fast path (:mod:`conveyor.api.fastpath`).

    Args:
        state: the API app's state (conveyor, parameter checker, batcher).
        scope: the request's ASGI scope (for ``root_path``).
        content_type: the first ``Content-Type`` header, if any.
        read_body: reads the whole request body.
        idempotency_key: the ``Idempotency-Key`` header, already checked (see
            :data:`~conveyor.limits.IDEMPOTENCY_KEY_MAX`).

    Raises:
        HTTPException: 415, or 413 from the body limit while reading.
        ConveyorError: invalid submission, full queue, store unavailable.
    """
    submission = await _read_submission(content_type, read_body)
    key = _idempotency_key(idempotency_key, submission)
    conveyor: Conveyor = state.conveyor
    result = await enqueue_submission(
        conveyor,
        state.parameter_checker,
        submission,
        key,
        state.submit_batcher,
        state.consumer_watch,
    )
    stored = result.job
    return JSONResponse(
        render_accepted(stored),
        status_code=202 if result.created else 200,
        headers={"Location": f"{scope.get('root_path', '')}/api/v1/jobs/{stored.id}"},
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
