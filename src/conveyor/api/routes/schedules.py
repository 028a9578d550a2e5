"""``/api/v1/schedules``: create, inspect, edit, pause, delete and trigger schedules.

Edits are stored at once and reach the leading scheduler within a second (it polls the
schedules' version). A schedule keeps its planned next run through an edit that does
not change its timing; a change of ``cron``, ``interval`` or ``timezone``, or enabling
it, plans the next run from now.

Schedules declared in code (``@app.cron``, ``source: "code"``) can be paused and resumed
(``enabled``) and deleted here, but not otherwise edited: the code would put its own
definition back when a scheduler starts.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any, Literal

import pydantic
from fastapi import APIRouter, Depends, Path, Query, Request
from pydantic import BaseModel, ConfigDict, Field
from pydantic.alias_generators import to_camel
from starlette.exceptions import HTTPException
from starlette.responses import Response

from conveyor.api.bodies import read_json_body
from conveyor.api.deps import get_checker, get_conveyor, open_backend
from conveyor.api.errors import JSONResponse, shorten, validation_error
from conveyor.api.params import ParameterChecker
from conveyor.api.schemas import (
    ERROR_DEFAULT,
    JOB_LINKS,
    JobOut,
    error_responses,
    link,
)
from conveyor.app import Conveyor
from conveyor.backends.base import Backend, Fire, MisfirePolicy, OverlapPolicy, Schedule
from conveyor.errors import ConflictError, ValidationError
from conveyor.job import new_job_id
from conveyor.limits import PRIORITY_MAX, QUEUE_NAME_MAX, QUEUE_PATTERN
from conveyor.scheduling import build_job, plan_next_run, validate_id, validate_schedule
from conveyor.scheduling.schedule import MAX_JITTER, MAX_SECONDS, MIN_INTERVAL, SCHEDULE_ID
from conveyor.wire import format_instant, optional_instant, render_job, render_parameters

router = APIRouter(prefix="/api/v1/schedules", tags=["schedules"], responses=ERROR_DEFAULT)

App = Annotated[Conveyor, Depends(get_conveyor)]
Checker = Annotated[ParameterChecker, Depends(get_checker)]
ScheduleId = Annotated[str, Path(description="the schedule's id")]

#: Body fields that only decide *whether* a schedule runs: the one edit a code schedule takes.
_SWITCHES = {"enabled"}


class ScheduleBody(BaseModel):
    """The body of ``POST``, ``PUT`` and ``PATCH`` on schedules.

    ``POST``/``PUT`` need ``type`` (or ``action``) and one of ``cron`` and ``interval``;
    omitted fields take their defaults. ``PATCH`` changes only the fields it names.
    """

    model_config = ConfigDict(
        alias_generator=to_camel,
        extra="forbid",
        strict=True,
        title="ScheduleIn",
        json_schema_extra={
            "example": {
                "id": "nightly-report",
                "type": "render_report",
                "parameters": {"start": "2030-01-01", "end": "2030-01-31"},
                "cron": "0 0 2 * * ?",
                "timezone": "Europe/Paris",
            }
        },
    )

    id: str | None = Field(
        None,
        min_length=1,
        max_length=200,
        pattern=f"^{SCHEDULE_ID.pattern}$",
        description="letters, digits and _ . : @ -; a new UUID when omitted",
    )
    type: str | None = Field(None, min_length=1, max_length=200, description="the task's name")
    action: str | None = Field(None, min_length=1, max_length=200, description="same as type")
    parameters: dict[str, Any] | list[Any] | None = Field(
        None, description="keyword arguments as an object, or positional ones as an array"
    )
    cron: str | None = Field(
        None, min_length=1, max_length=200, description="5 fields, or 6 with seconds first"
    )
    interval: float | None = Field(
        None, ge=MIN_INTERVAL, le=MAX_SECONDS, description="seconds between fires"
    )
    timezone: str | None = Field(None, min_length=1, max_length=64, description="default UTC")
    enabled: bool | None = Field(None, description="default true")
    queue: str | None = Field(None, min_length=1, max_length=QUEUE_NAME_MAX, pattern=QUEUE_PATTERN)
    priority: int | None = Field(None, ge=-PRIORITY_MAX, le=PRIORITY_MAX)
    jitter: float | None = Field(
        None, ge=0, le=MAX_JITTER, description="delay each fire by up to this many seconds"
    )
    misfire_policy: Literal["run_once", "skip"] | None = Field(
        None, description="after downtime: fire once for missed times (default), or skip"
    )
    max_drift: float | None = Field(
        None, gt=0, le=MAX_SECONDS, description="run_once makes up for fires this recent (s)"
    )
    overlap: Literal["allow", "skip"] | None = Field(
        None, description="skip: no fire while the last job is pending or running"
    )


class ScheduleOut(BaseModel):
    """A schedule."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    id: str
    type: str
    parameters: dict[str, Any] | list[Any]
    args: list[Any] | None = Field(None, description="positional arguments, when both kinds")
    cron: str | None
    interval: float | None
    timezone: str
    enabled: bool
    queue: str | None
    priority: int | None
    jitter: float
    misfire_policy: MisfirePolicy
    max_drift: float
    overlap: OverlapPolicy
    source: Literal["api", "code"]
    created_at: datetime
    updated_at: datetime
    next_run_at: datetime | None
    last_run_at: datetime | None
    last_job_id: str | None


class ScheduleList(BaseModel):
    """Schedules by id, one page at a time."""

    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True)

    items: list[ScheduleOut]
    next_cursor: str | None = Field(description="pass as `cursor` for the next page")


_SCHEDULE_PATH = "/api/v1/schedules/{schedule_id}"
_SCHEDULE_ID = "$response.body#/id"
#: Where an answer holding a schedule leads (OpenAPI links).
SCHEDULE_LINKS = {
    "getSchedule": link("GET", _SCHEDULE_PATH, schedule_id=_SCHEDULE_ID),
    "replaceSchedule": link("PUT", _SCHEDULE_PATH, schedule_id=_SCHEDULE_ID),
    "patchSchedule": link("PATCH", _SCHEDULE_PATH, schedule_id=_SCHEDULE_ID),
    "deleteSchedule": link("DELETE", _SCHEDULE_PATH, schedule_id=_SCHEDULE_ID),
    "triggerSchedule": link("POST", f"{_SCHEDULE_PATH}/trigger", schedule_id=_SCHEDULE_ID),
}


def _errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    return error_responses(
        *statuses,
        s404="no such schedule",
        s409="a schedule with that id exists, or it is declared in code",
        s422="invalid schedule (details.field names the field)",
    )


_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": ScheduleBody.model_json_schema(by_alias=True)}},
    }
}


def render_schedule(schedule: Schedule) -> dict[str, Any]:
    """A schedule as the API shows it (camelCase)."""
    args, kwargs = schedule.args, schedule.kwargs
    out: dict[str, Any] = {
        "id": schedule.id,
        "type": schedule.type,
        "parameters": render_parameters(args, kwargs),
        "cron": schedule.cron,
        "interval": schedule.interval,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "queue": schedule.queue,
        "priority": schedule.priority,
        "jitter": schedule.jitter,
        "misfirePolicy": schedule.misfire_policy.value,
        "maxDrift": schedule.max_drift,
        "overlap": schedule.overlap.value,
        "source": schedule.source,
        "createdAt": format_instant(schedule.created_at),
        "updatedAt": format_instant(schedule.updated_at),
        "nextRunAt": optional_instant(schedule.next_run_at),
        "lastRunAt": optional_instant(schedule.last_run_at),
        "lastJobId": schedule.last_job_id,
    }
    if args and kwargs:  # positional-only and keyword arguments together
        out["args"] = list(args)
    return out


# -- reading and checking bodies ---------------------------------------------------------
def _field_error(field: str, message: str) -> ValidationError:
    return ValidationError(
        message,
        {
            "field": field,
            "errors": [{"loc": ["body", field], "message": message, "type": "value_error"}],
        },
    )


async def _read_body(request: Request) -> ScheduleBody:
    payload = await read_json_body(request.headers.get("content-type"), request.body)
    if not isinstance(payload, dict):
        raise ValidationError("the request body must be a JSON object", {"errors": []})
    try:
        return ScheduleBody.model_validate(payload)
    except pydantic.ValidationError as exc:
        error = validation_error(exc, "invalid schedule", ("body",))
        first = error.details["errors"][0]["loc"] if error.details.get("errors") else []
        if len(first) > 1:
            error.details["field"] = first[1]
        raise error from None


def _given(body: ScheduleBody) -> set[str]:
    """Fields the body names (snake_case), with ``action`` folded into ``type``.

    Raises:
        ValidationError: ``type`` and ``action`` disagree.
    """
    given = set(body.model_fields_set)
    if "action" in given:
        if "type" in given and body.type != body.action:
            raise _field_error("action", "give type or action (the same thing), not both")
        given.discard("action")
        given.add("type")
    return given


def _apply(
    conveyor: Conveyor,
    checker: ParameterChecker,
    body: ScheduleBody,
    base: Schedule,
    given: set[str],
) -> Schedule:
    """``base`` with the body's fields applied, checked against the registered task.

    Raises:
        ValidationError, UnknownTaskError, InvalidArgumentsError (422), naming the field.
    """
    changes: dict[str, Any] = {}
    for name in ("timezone", "enabled", "queue", "priority", "jitter", "max_drift"):
        if name in given:
            changes[name] = getattr(body, name)
    if "cron" in given or "interval" in given:
        # Naming one kind of timing replaces the other unless both are named.
        changes["cron"] = body.cron if "cron" in given else None
        changes["interval"] = body.interval if "interval" in given else None
    if "misfire_policy" in given:
        changes["misfire_policy"] = MisfirePolicy(body.misfire_policy or "run_once")
    if "overlap" in given:
        changes["overlap"] = OverlapPolicy(body.overlap or "allow")
    if "type" in given:
        changes["type"] = body.type or body.action
    for name, default in (("timezone", "UTC"), ("enabled", True), ("jitter", 0.0)):
        if changes.get(name, ...) is None:
            changes[name] = default
    if changes.get("max_drift", ...) is None:
        changes["max_drift"] = 3600.0
    schedule = dataclasses.replace(base, **changes)
    if not schedule.type:
        raise _field_error("type", "type (or action) is required: the task to run")
    if schedule.cron is None and schedule.interval is None:
        raise _field_error("cron", "give cron (an expression) or interval (seconds)")
    if schedule.cron is not None and schedule.interval is not None:
        raise _field_error("cron", "give cron or interval, not both")
    if "parameters" in given or "type" in given:
        # Pausing or retiming needs no task; a new type or new parameters are checked
        # against the registered task, as a job submission is.
        try:
            task = conveyor.get_task(schedule.type)
        except ValidationError as exc:
            exc.details["field"] = "type"
            raise
        if "parameters" in given and body.parameters is not None:
            parameters = body.parameters
        elif schedule.args and not schedule.kwargs:
            parameters = list(schedule.args)
        else:
            parameters = dict(schedule.kwargs)
        try:
            args, kwargs = checker.check(task, parameters)
            schedule.args, schedule.kwargs = task.bind(args, kwargs)
        except ValidationError as exc:
            exc.details.setdefault("field", "parameters")
            raise
    try:
        validate_schedule(schedule)
    except ValidationError as exc:
        field = str(exc.details.get("field", "schedule"))
        raise _field_error(field, exc.message) from None
    return schedule


async def _save(backend: Backend, new: Schedule, old: Schedule | None) -> Schedule:
    now = await backend.now()
    new.updated_at = now
    if old is None:
        new.created_at = now
    plan_next_run(new, old, now)
    return await backend.save_schedule(new)


async def _existing(backend: Backend, schedule_id: str) -> Schedule:
    try:
        validate_id(schedule_id)
    except ValidationError:
        schedule = None
    else:
        schedule = await backend.get_schedule(schedule_id)
    if schedule is None:
        raise HTTPException(404, f"schedule {shorten(schedule_id)!r} not found")
    return schedule


def _location(request: Request, schedule_id: str) -> str:
    return f"{request.scope.get('root_path', '')}/api/v1/schedules/{schedule_id}"


# -- routes ------------------------------------------------------------------------------
@router.post(
    "",
    status_code=201,
    response_model=ScheduleOut,
    summary="Create a schedule",
    openapi_extra=_BODY,
    responses={201: {"links": SCHEDULE_LINKS}, **_errors(401, 409, 413, 415, 422, 503)},
)
async def create_schedule(request: Request, conveyor: App, checker: Checker) -> Response:
    """Create a cron or interval schedule; 201 with ``Location``; 409 if the id exists."""
    body = await _read_body(request)
    given = _given(body) | {"type"}
    schedule_id = body.id or new_job_id()
    new = _apply(conveyor, checker, body, Schedule(id=schedule_id, type=""), given)
    backend = await open_backend(conveyor)
    if await backend.get_schedule(schedule_id) is not None:
        raise ConflictError(f"schedule {schedule_id!r} already exists; PUT or PATCH it")
    stored = await _save(backend, new, None)
    return JSONResponse(
        render_schedule(stored),
        status_code=201,
        headers={"Location": _location(request, stored.id)},
    )


@router.get("", response_model=ScheduleList, summary="List schedules", responses=_errors(401, 503))
async def list_schedules(
    conveyor: App,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 100,
    cursor: Annotated[
        str | None, Query(max_length=200, description="from nextCursor: the last id seen")
    ] = None,
) -> Response:
    """Every schedule, by id."""
    backend = await open_backend(conveyor)
    everything = await backend.list_schedules()
    after = [s for s in everything if cursor is None or s.id > cursor]
    page = after[:limit]
    return JSONResponse(
        {
            "items": [render_schedule(s) for s in page],
            "nextCursor": page[-1].id if len(after) > limit else None,
        }
    )


@router.get(
    "/{schedule_id}",
    response_model=ScheduleOut,
    summary="Get a schedule",
    responses={200: {"links": SCHEDULE_LINKS}, **_errors(401, 404, 503)},
)
async def get_schedule(conveyor: App, schedule_id: ScheduleId) -> Response:
    """A schedule with its ``nextRunAt``, ``lastRunAt`` and ``lastJobId``."""
    backend = await open_backend(conveyor)
    return JSONResponse(render_schedule(await _existing(backend, schedule_id)))


async def _edit(
    request: Request, conveyor: App, checker: Checker, schedule_id: str, *, replace: bool
) -> Response:
    body = await _read_body(request)
    backend = await open_backend(conveyor)
    old = await _existing(backend, schedule_id)
    if body.id is not None and body.id != old.id:
        raise _field_error("id", "the id in the body differs from the one in the path")
    given = _given(body) - {"id"}
    if old.source == "code" and not given <= _SWITCHES:
        raise ConflictError(
            f"schedule {old.id!r} is declared in code (@app.cron): change it there; "
            "only `enabled` can be changed over the API"
        )
    if replace and old.source != "code":
        base = Schedule(id=old.id, type="", created_at=old.created_at, source=old.source)
        base.last_run_at, base.last_job_id = old.last_run_at, old.last_job_id
        given |= {"type", "parameters"}
    else:
        base = dataclasses.replace(old)
    new = _apply(conveyor, checker, body, base, given)
    stored = await _save(backend, new, old)
    return JSONResponse(render_schedule(stored))


@router.put(
    "/{schedule_id}",
    response_model=ScheduleOut,
    summary="Replace a schedule",
    openapi_extra=_BODY,
    responses={200: {"links": SCHEDULE_LINKS}, **_errors(401, 404, 409, 413, 415, 422, 503)},
)
async def replace_schedule(
    request: Request, conveyor: App, checker: Checker, schedule_id: ScheduleId
) -> Response:
    """Replace a schedule's definition (omitted fields take their defaults)."""
    return await _edit(request, conveyor, checker, schedule_id, replace=True)


@router.patch(
    "/{schedule_id}",
    response_model=ScheduleOut,
    summary="Change some fields of a schedule",
    openapi_extra=_BODY,
    responses={200: {"links": SCHEDULE_LINKS}, **_errors(401, 404, 409, 413, 415, 422, 503)},
)
async def patch_schedule(
    request: Request, conveyor: App, checker: Checker, schedule_id: ScheduleId
) -> Response:
    """Change the named fields only: ``{"enabled": false}`` pauses a schedule."""
    return await _edit(request, conveyor, checker, schedule_id, replace=False)


@router.delete(
    "/{schedule_id}",
    status_code=204,
    summary="Delete a schedule",
    responses=_errors(401, 404, 503),
)
async def delete_schedule(conveyor: App, schedule_id: ScheduleId) -> Response:
    """Delete a schedule; its jobs already enqueued stay. A schedule declared in code
    comes back when a scheduler next starts."""
    backend = await open_backend(conveyor)
    await _existing(backend, schedule_id)
    gone = await backend.delete_schedule(schedule_id)
    if not gone:
        raise HTTPException(404, f"schedule {shorten(schedule_id)!r} not found")
    return Response(status_code=204)


@router.post(
    "/{schedule_id}/trigger",
    status_code=202,
    response_model=JobOut,
    summary="Run a schedule now",
    responses={202: {"links": JOB_LINKS}, **_errors(401, 404, 503)},
)
async def trigger_schedule(request: Request, conveyor: App, schedule_id: ScheduleId) -> Response:
    """Enqueue the schedule's job now, outside its timing (also when disabled); 202 with
    the job and its ``Location``. The planned next run does not move."""
    backend = await open_backend(conveyor)
    schedule = await _existing(backend, schedule_id)
    now = await backend.now()
    (result,) = await conveyor.enqueue_jobs([build_job(conveyor, schedule, now, None)])
    fire = Fire(schedule.id, now, schedule.next_run_at, result.job.id)
    await backend.record_fires([fire])
    root = request.scope.get("root_path", "")
    return JSONResponse(
        render_job(result.job),
        status_code=202,
        headers={"Location": f"{root}/api/v1/jobs/{result.job.id}"},
    )
