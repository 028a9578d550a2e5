"""``/api/v1/workers``: live workers, as their heartbeats register them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends
from pydantic import Field
from starlette.responses import Response

from conveyor.api.deps import get_conveyor, open_backend
from conveyor.api.errors import JSONResponse
from conveyor.api.schemas import (
    ERROR_DEFAULT,
    CamelModel,
    error_responses,
)
from conveyor.app import Conveyor
from conveyor.wire import format_instant

router = APIRouter(prefix="/api/v1/workers", tags=["workers"], responses=ERROR_DEFAULT)


class WorkerOut(CamelModel):
    """One live worker process."""

    id: str
    host: str
    pid: int
    queues: list[str]
    concurrency: int = Field(description="the most jobs it runs at once")
    in_flight: int = Field(description="jobs it was running at its last heartbeat")
    started_at: datetime
    last_heartbeat: datetime


class WorkerList(CamelModel):
    items: list[WorkerOut]


_ERRORS = error_responses(401, 503)


@router.get("", response_model=WorkerList, summary="List workers", responses=_ERRORS)
async def list_workers(conveyor: Annotated[Conveyor, Depends(get_conveyor)]) -> Response:
    """Workers whose heartbeat is recent (a worker that stops beating drops out after
    about three heartbeat intervals; a clean shutdown removes it at once)."""
    backend = await open_backend(conveyor)
    workers = await backend.list_workers()
    items = [
        {
            "id": w.id,
            "host": w.host,
            "pid": w.pid,
            "queues": list(w.queues),
            "concurrency": w.concurrency,
            "inFlight": w.in_flight,
            "startedAt": format_instant(w.started_at),
            "lastHeartbeat": format_instant(w.last_heartbeat),
        }
        for w in workers
    ]
    return JSONResponse({"items": items})
