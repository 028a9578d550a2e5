"""Request and response models, and how a job record is shown over HTTP.

Responses are rendered straight to dicts by :func:`render_job` (no model round trip on
the hot path); the response models document the same shape in the OpenAPI spec.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydantic.alias_generators import to_camel

from conveyor.job import JobStatus
from conveyor.limits import (
    IDEMPOTENCY_KEY_MAX,
    PRIORITY_MAX,
    QUEUE_NAME_MAX,
    QUEUE_PATTERN,
    RETRIES_MAX,
    TASK_NAME_MAX,
    TIMEOUT_MAX,
)
from conveyor.results import INLINE_RESULT_MAX
from conveyor.wire import parse_instant

#: The longest delay a job may be submitted with: ten years.
MAX_DELAY_SECONDS = 315_360_000.0

#: Job ids are UUIDs; anything outside this set cannot name a job.
JOB_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:-]{0,127}", re.ASCII)


class CamelModel(BaseModel):
    """A model whose fields are camelCase in JSON (and snake_case in Python)."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)


class SubmitJob(BaseModel):
    """The body of ``POST /api/v1/jobs``."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        extra="forbid",
        strict=True,
        title="SubmitJob",
        json_schema_extra={
            "example": {"type": "send_email", "parameters": {"to": "a@example.com"}}
        },
    )

    type: str = Field(
        min_length=1, max_length=TASK_NAME_MAX, description="the task's registered name"
    )
    parameters: dict[str, Any] | list[Any] = Field(
        default_factory=dict,
        description="keyword arguments as an object, or positional arguments as an array",
    )
    queue: str | None = Field(None, min_length=1, max_length=QUEUE_NAME_MAX, pattern=QUEUE_PATTERN)
    priority: int | None = Field(
        None, ge=-PRIORITY_MAX, le=PRIORITY_MAX, description="higher runs first within a queue"
    )
    delay: float | None = Field(
        None, ge=0, le=MAX_DELAY_SECONDS, description="seconds to wait before running"
    )
    run_at: str | None = Field(
        None,
        max_length=40,
        description="RFC 3339 instant to run at, e.g. 2030-01-01T00:00:00Z",
        json_schema_extra={"format": "date-time"},
    )
    max_retries: int | None = Field(None, ge=0, le=RETRIES_MAX)
    timeout: float | None = Field(None, gt=0, le=TIMEOUT_MAX, description="seconds per attempt")
    idempotency_key: str | None = Field(None, min_length=1, max_length=IDEMPOTENCY_KEY_MAX)
    callback_url: str | None = Field(None, min_length=1, max_length=2048)
    callback_secret: str | None = Field(None, min_length=1, max_length=1024)

    @field_validator("run_at")
    @classmethod
    def _check_run_at(cls, value: str | None) -> str | None:
        if value is not None:
            parse_instant(value)
        return value

    @field_validator("callback_url")
    @classmethod
    def _check_callback_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not value.isprintable() or any(c.isspace() for c in value):
            raise ValueError("must not contain spaces or control characters")
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - raises on a malformed port
        except ValueError as exc:
            raise ValueError(f"not a URL: {exc}") from None
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError("must be an absolute http:// or https:// URL")
        return value

    def run_at_timestamp(self) -> float | None:
        """``runAt`` as seconds since the epoch."""
        return None if self.run_at is None else parse_instant(self.run_at)


# -- response models (OpenAPI documentation of the dicts above) -------------------------
class ErrorInfo(BaseModel):
    """What went wrong."""

    code: str = Field(examples=["NOT_FOUND"])
    message: str
    details: dict[str, Any] = Field(default_factory=dict)


class ErrorResponse(BaseModel):
    """The shape of every error answer."""

    error: ErrorInfo


class SubmittedJob(CamelModel):
    """The answer to a submission."""

    job_id: str
    status: JobStatus
    created_at: datetime


class JobOut(CamelModel):
    """A job record."""

    job_id: str
    type: str
    status: JobStatus
    queue: str
    priority: int
    progress: int = Field(ge=0, le=100)
    parameters: dict[str, Any] | list[Any]
    args: list[Any] | None = Field(None, description="positional arguments, when both kinds")
    result: Any = Field(
        None,
        description="present when completed; in a listing, only up to "
        f"{INLINE_RESULT_MAX} bytes of JSON (larger: `resultOmitted`, `resultBytes`)",
    )
    result_omitted: bool | None = Field(
        None, description="in a listing: the result is too large to list; GET the job"
    )
    result_bytes: int | None = Field(
        None, description="with `resultOmitted`: the size of the result's JSON in bytes"
    )
    error: ErrorInfo | None = Field(None, description="present when the job failed")
    attempts: int
    max_retries: int
    timeout: float | None = None
    created_at: datetime
    run_at: datetime
    started_at: datetime | None = None
    completed_at: datetime | None = None
    idempotency_key: str | None = None
    callback_url: str | None = None
    webhook: dict[str, Any] | None = Field(None, description="webhook delivery state")


class JobList(CamelModel):
    """One page of jobs, newest first."""

    items: list[JobOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


class EventPage(CamelModel):
    """Stored events after a cursor, oldest first (each as the SSE stream's JSON)."""

    items: list[dict[str, Any]]
    next_cursor: str | None = Field(
        description="pass as `after` for the next page (the last item's id, or the "
        "`after` given when there is none)"
    )


class Health(BaseModel):
    """Liveness or readiness."""

    status: str = Field(examples=["ok"])


_ERROR_DESCRIPTIONS = {
    401: "missing or wrong bearer token",
    404: "not found",
    409: "the state does not allow this",
    410: "events after the cursor were trimmed (retention)",
    413: "request body too large",
    415: "the body is not JSON",
    422: "invalid request",
    429: "the queue is full",
    503: "the store is unavailable",
}


def error_responses(*statuses: int, **described: str) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for error statuses, all in the error shape.

    Args:
        statuses: the statuses a route can answer with.
        described: route-specific wording, keyed ``s404=...`` and so on.
    """
    return {
        s: {
            "model": ErrorResponse,
            "description": described.get(f"s{s}", _ERROR_DESCRIPTIONS[s]),
        }
        for s in statuses
    }


def link(method: str, path: str, **parameters: str) -> dict[str, Any]:
    """An OpenAPI link to the operation ``method path`` of this API.

    Args:
        method: the target's HTTP method.
        path: the target's path template, as routed (``/api/v1/jobs/{job_id}``).
        parameters: the target's parameters, each a runtime expression such as
            ``$response.body#/jobId``.
    """
    pointer = path.replace("~", "~0").replace("/", "~1")
    return {"operationRef": f"#/paths/{pointer}/{method.lower()}", "parameters": parameters}


_JOB_PATH = "/api/v1/jobs/{job_id}"
_JOB_ID = "$response.body#/jobId"
#: Where an answer holding a job leads (OpenAPI links): its record, cancel, retry.
JOB_LINKS = {
    "getJob": link("GET", _JOB_PATH, job_id=_JOB_ID),
    "cancelJob": link("DELETE", _JOB_PATH, job_id=_JOB_ID),
    "retryJob": link("POST", f"{_JOB_PATH}/retry", job_id=_JOB_ID),
}

#: Documents, on every route, that any other error has the error shape.
ERROR_DEFAULT: dict[int | str, dict[str, Any]] = {
    "default": {"model": ErrorResponse, "description": "an error (every error has this shape)"}
}
