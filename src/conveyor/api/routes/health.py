"""Liveness and readiness probes."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends
from starlette.responses import Response

from conveyor.api.deps import get_conveyor, open_backend
from conveyor.api.errors import JSONResponse
from conveyor.api.schemas import ERROR_DEFAULT, ErrorResponse, Health
from conveyor.app import Conveyor
from conveyor.errors import BackendUnavailableError

#: How long readiness waits for the store to answer.
READY_TIMEOUT_SECONDS = 2.0

router = APIRouter(tags=["health"], responses=ERROR_DEFAULT)


@router.get("/healthz", response_model=Health, summary="Liveness")
async def healthz() -> Response:
    """Always ``{"status": "ok"}`` while the process serves requests."""
    return JSONResponse({"status": "ok"})


@router.get(
    "/readyz",
    response_model=Health,
    summary="Readiness",
    responses={503: {"model": ErrorResponse, "description": "the store is unreachable"}},
)
async def readyz(conveyor: Annotated[Conveyor, Depends(get_conveyor)]) -> Response:
    """``{"status": "ok"}`` when the store answers, else 503 UNAVAILABLE."""
    try:
        async with asyncio.timeout(READY_TIMEOUT_SECONDS):
            backend = await open_backend(conveyor)
            await backend.ping()
    except TimeoutError:
        raise BackendUnavailableError(
            f"the store did not answer within {READY_TIMEOUT_SECONDS}s"
        ) from None
    return JSONResponse({"status": "ok"})
