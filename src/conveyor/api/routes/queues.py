"""``/api/v1/queues``: depth of each queue by state, rates, pause and resume."""

from __future__ import annotations

from collections import Counter
from typing import Annotated, Any, cast

from fastapi import APIRouter, Depends, Path, Request
from pydantic import BaseModel, Field
from starlette.responses import Response

from conveyor.api.consumers import ConsumerWatch
from conveyor.api.deps import get_conveyor, open_backend
from conveyor.api.errors import JSONResponse
from conveyor.api.rates import CompletionRate
from conveyor.api.schemas import (
    ERROR_DEFAULT,
    CamelModel,
    error_responses,
)
from conveyor.app import Conveyor
from conveyor.backends.base import Backend, QueueStats
from conveyor.limits import QUEUE_NAME_MAX, QUEUE_PATTERN

router = APIRouter(prefix="/api/v1/queues", tags=["queues"], responses=ERROR_DEFAULT)

App = Annotated[Conveyor, Depends(get_conveyor)]
QueueName = Annotated[
    str,
    Path(min_length=1, max_length=QUEUE_NAME_MAX, pattern=QUEUE_PATTERN, description="the queue"),
]
_ERRORS = error_responses(401, 503)


class QueueOut(CamelModel):
    """One queue: counts by state, its settings, and its recent throughput."""

    name: str
    pending: int = Field(description="due jobs waiting for a worker")
    scheduled: int = Field(description="delayed jobs and retries waiting for their time")
    running: int
    completed: int = Field(description="completed jobs still retained")
    failed: int = Field(description="the dead-letter set")
    cancelled: int
    paused: bool = Field(description="workers take none of its jobs while paused")
    max_length: int | None = Field(description="most pending + scheduled jobs; null: no limit")
    completed_per_minute: int = Field(
        description="jobs completed in the last minute, counted from the event feed"
    )
    consumers: int = Field(
        description="live workers that consume the queue; 0 with jobs pending means they "
        "wait until a worker for it starts"
    )


class QueueList(BaseModel):
    items: list[QueueOut]


def _rates(request: Request) -> CompletionRate:
    state = request.app.state
    rate = getattr(state, "completion_rate", None)
    if rate is None:
        rate = state.completion_rate = CompletionRate()
    return cast(CompletionRate, rate)


def _render(q: QueueStats, per_minute: dict[str, int], consumers: Counter[str]) -> dict[str, Any]:
    return {
        "name": q.name,
        "pending": q.pending,
        "scheduled": q.scheduled,
        "running": q.running,
        "completed": q.completed,
        "failed": q.failed,
        "cancelled": q.cancelled,
        "paused": q.paused,
        "maxLength": q.max_length,
        "completedPerMinute": per_minute.get(q.name, 0),
        "consumers": consumers[q.name],
    }


async def _stats(
    request: Request, conveyor: Conveyor, backend: Backend
) -> tuple[dict[str, QueueStats], dict[str, int], Counter[str]]:
    """Counts by queue (with those declared in code or consumed, still empty), completions
    in the last minute and live consumers."""
    watch: ConsumerWatch = request.app.state.consumer_watch
    found = {q.name: q for q in await backend.queue_stats()}
    per_minute = await _rates(request).per_minute(backend)
    consumers = await watch.consumers(backend)
    for name in (*conveyor.queue_options, *consumers):
        options = conveyor.queue_options.get(name)
        limit = None if options is None else options.max_length
        found.setdefault(name, QueueStats(name, max_length=limit))
    return found, per_minute, consumers


@router.get("", response_model=QueueList, summary="List queues", responses=_ERRORS)
async def list_queues(request: Request, conveyor: App) -> Response:
    """Every queue that holds jobs, is paused or limited, is declared in code or is
    consumed by a live worker."""
    backend = await open_backend(conveyor)
    stats, per_minute, consumers = await _stats(request, conveyor, backend)
    items = [_render(stats[name], per_minute, consumers) for name in sorted(stats)]
    return JSONResponse({"items": items})


async def _one(request: Request, conveyor: App, backend: Backend, name: str) -> Response:
    stats, per_minute, consumers = await _stats(request, conveyor, backend)
    return JSONResponse(_render(stats.get(name) or QueueStats(name), per_minute, consumers))


@router.post("/{name}/pause", response_model=QueueOut, summary="Pause a queue", responses=_ERRORS)
async def pause_queue(request: Request, conveyor: App, name: QueueName) -> Response:
    """Workers stop taking the queue's jobs (within a second); jobs already running go
    on, and submissions are still accepted. Idempotent."""
    backend = await open_backend(conveyor)
    await backend.pause_queue(name)
    return await _one(request, conveyor, backend, name)


@router.post("/{name}/resume", response_model=QueueOut, summary="Resume a queue", responses=_ERRORS)
async def resume_queue(request: Request, conveyor: App, name: QueueName) -> Response:
    """Workers take the queue's jobs again. Idempotent."""
    backend = await open_backend(conveyor)
    await backend.resume_queue(name)
    return await _one(request, conveyor, backend, name)
