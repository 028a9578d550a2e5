"""Job events: ``GET /api/v1/events/stream`` (Server-Sent Events) and
``GET /api/v1/events`` (stored events after a cursor, for catching up)."""

from __future__ import annotations

import re
from typing import Annotated

from fastapi import APIRouter, Depends, Header, Query, Request
from starlette.responses import Response

from conveyor.api.deps import get_conveyor, open_backend
from conveyor.api.errors import JSONResponse, shorten
from conveyor.api.events import EVENT_TYPES, Catchup, EventStreamResponse, hub_of, render_event
from conveyor.api.schemas import ERROR_DEFAULT, JOB_ID, ErrorResponse, EventPage, error_responses
from conveyor.app import Conveyor
from conveyor.backends.base import Event
from conveyor.errors import JobNotFoundError, ValidationError

router = APIRouter(prefix="/api/v1/events", tags=["events"], responses=ERROR_DEFAULT)

#: What an event id may look like: the stores' cursors are short and printable.
EVENT_ID = re.compile(r"[A-Za-z0-9_.:-]{1,128}", re.ASCII)

_STREAM_DOC = (
    "Each event is `id: <eventId>` and `data: <json>`, the JSON being "
    '`{"type", "jobId", "at", "eventId", ...}` with `progress`, `result`, `error` or '
    "`attempt` as the type has them. Without `Last-Event-ID` the stream starts with new "
    "events; with it, the events after that id are replayed first. A comment line "
    "(`: keep-alive`) is sent after 15 s of silence. A client that falls behind gets a "
    "final `event: error` and the stream ends; reconnecting with `Last-Event-ID` resumes. "
    "The store keeps events for `CONVEYOR_EVENT_RETENTION_SECONDS` (1 h by default): when "
    "events after `Last-Event-ID` were trimmed, the replay starts with "
    '`event: history_truncated` and `data: {"lastEventId", "oldestEventId", "lost"}` '
    "(`lost`: how many events, or null when the store cannot tell), then goes on from the "
    "oldest event still held."
)

_READ_DOC = (
    "The stored events after `after` (from the oldest held without it), oldest first, "
    "each as the SSE stream's JSON. Pass `nextCursor` back as `after` to read on. When "
    "events after `after` were trimmed (they are kept for "
    "`CONVEYOR_EVENT_RETENTION_SECONDS`), the answer is 410 `HISTORY_TRUNCATED` with "
    "`details.oldestEventId` and `details.lost`: nothing is skipped silently; repeat the "
    "read with `allowGap=true` to go on from the oldest event still held."
)


def parse_types(raw: str | None) -> frozenset[str] | None:
    """The ``type`` filter: comma-separated event types, or ``None`` for all.

    Raises:
        ValidationError: an unknown type.
    """
    if raw is None or not raw.strip():
        return None
    types = frozenset(part.strip() for part in raw.split(",") if part.strip())
    unknown = sorted(types - EVENT_TYPES)
    if unknown:
        raise ValidationError(
            f"unknown event type {shorten(unknown[0])!r}",
            {
                "errors": [
                    {
                        "loc": ["query", "type"],
                        "message": f"must be among {', '.join(sorted(EVENT_TYPES))}",
                        "type": "enum",
                    }
                ],
                "known": sorted(EVENT_TYPES),
            },
        )
    return types


def _resume_point(header: str | None, query: str | None) -> str | None:
    # The header wins: a browser reconnecting after a drop sends it with the original
    # URL, whose `lastEventId` is older.
    value = header.strip() if header and header.strip() else query
    if not value:
        return None
    if not EVENT_ID.fullmatch(value):
        raise ValidationError(
            "invalid Last-Event-ID",
            {
                "errors": [
                    {
                        "loc": ["header", "Last-Event-ID"],
                        "message": "not an event id",
                        "type": "value_error",
                    }
                ]
            },
        )
    return value


@router.get(
    "/stream",
    status_code=200,
    summary="Stream job events (SSE)",
    description=_STREAM_DOC,
    response_class=EventStreamResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "the event stream"},
        401: {"model": ErrorResponse, "description": "missing or wrong bearer token"},
        404: {"model": ErrorResponse, "description": "no such job"},
        422: {"model": ErrorResponse, "description": "unknown event type or bad event id"},
        503: {"model": ErrorResponse, "description": "the store is unavailable"},
    },
)
async def stream_events(
    request: Request,
    conveyor: Annotated[Conveyor, Depends(get_conveyor)],
    job_id: Annotated[
        str | None, Query(alias="jobId", max_length=200, description="only this job's events")
    ] = None,
    type: Annotated[
        str | None,
        Query(max_length=2000, description="only these event types, comma-separated"),
    ] = None,
    last_event_id: Annotated[
        str | None, Header(alias="Last-Event-ID", max_length=200, include_in_schema=False)
    ] = None,
    last_event_id_query: Annotated[
        str | None,
        Query(alias="lastEventId", max_length=200, description="resume after this event id"),
    ] = None,
) -> Response:
    """Job events as Server-Sent Events."""
    types = parse_types(type)
    resume_after = _resume_point(last_event_id, last_event_id_query)
    backend = await open_backend(conveyor)
    if job_id is not None:
        # Like /jobs/{jobId}: an id that cannot be one of ours is simply not found.
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFoundError(shorten(job_id))
        if await backend.get_job(job_id) is None:
            raise JobNotFoundError(job_id)
    hub = hub_of(request.app.state)
    subscription = await hub.subscribe(job_ids=None if job_id is None else {job_id}, types=types)
    catchup: Catchup | None = None
    first_page: list[Event] = []
    if resume_after is not None:
        catchup = Catchup(backend, resume_after, subscription.start, hub.page_size)
        try:
            first_page = await catchup.next_page()
        except BaseException:
            subscription.close()
            raise
    return EventStreamResponse(hub, subscription, catchup, first_page)


@router.get(
    "",
    response_model=EventPage,
    summary="Read stored events (catch-up)",
    description=_READ_DOC,
    responses=error_responses(401, 410, 422, 503),
)
async def read_events(
    conveyor: Annotated[Conveyor, Depends(get_conveyor)],
    after: Annotated[
        str | None,
        Query(
            max_length=128,
            pattern=r"^[A-Za-z0-9_.:-]+$",
            description="the id of the last event you have",
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=1000, description="page size")] = 100,
    allow_gap: Annotated[
        bool,
        Query(alias="allowGap", description="read past trimmed events instead of a 410"),
    ] = False,
) -> Response:
    """Stored events after a cursor."""
    backend = await open_backend(conveyor)
    events = await backend.read_events(after, limit, allow_gap=allow_gap)
    next_cursor = events[-1].id if events else after
    return JSONResponse({"items": [render_event(e) for e in events], "nextCursor": next_cursor})
