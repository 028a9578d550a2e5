"""``/api/v1/queues``: depth of each queue by state."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import BaseModel
from starlette.responses import Response

from conveyor.api.deps import backend_errors, get_conveyor, open_backend
from conveyor.api.errors import JSONResponse
from conveyor.api.schemas import ERROR_DEFAULT
from conveyor.app import Conveyor

router = APIRouter(prefix="/api/v1/queues", tags=["queues"], responses=ERROR_DEFAULT)


class QueueOut(BaseModel):
    name: str
    pending: int
    scheduled: int
    running: int
    completed: int
    failed: int
    cancelled: int
    paused: bool


class QueueList(BaseModel):
    items: list[QueueOut]


@router.get("", response_model=QueueList, summary="List queues")
async def list_queues(conveyor: Annotated[Conveyor, Depends(get_conveyor)]) -> Response:
    """Every queue that holds jobs, with counts by state (``scheduled``: delayed jobs)."""
    backend = await open_backend(conveyor)
    with backend_errors():
        stats = await backend.queue_stats()
    items = [
        {
            "name": q.name,
            "pending": q.pending,
            "scheduled": q.scheduled,
            "running": q.running,
            "completed": q.completed,
            "failed": q.failed,
            "cancelled": q.cancelled,
            "paused": q.paused,
        }
        for q in stats
    ]
    return JSONResponse({"items": items})
