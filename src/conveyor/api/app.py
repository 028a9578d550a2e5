"""The API app factory."""

from __future__ import annotations

from fastapi import FastAPI

from conveyor.api.errors import JSONResponse, install_error_handlers
from conveyor.api.middleware import BearerAuthMiddleware, BodyLimitMiddleware
from conveyor.api.params import ParameterChecker
from conveyor.api.routes import dashboard, health, jobs, queues, tasks
from conveyor.app import Conveyor


def create_app(conveyor: Conveyor) -> FastAPI:
    """Build the HTTP API for ``conveyor``.

    All state lives on the returned app (``app.state``); several apps can serve several
    Conveyor instances in one process. The app does not close ``conveyor``: whoever
    created it owns it.

    Args:
        conveyor: the application whose tasks are submitted and whose store is read.
            ``settings.api_tokens`` turns on bearer auth; ``settings.max_body_bytes``
            bounds request bodies.
    """
    app = FastAPI(
        title="Conveyor",
        summary="Submit, inspect, cancel and retry background jobs.",
        version="1",
        default_response_class=JSONResponse,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
    )
    app.state.conveyor = conveyor
    app.state.parameter_checker = ParameterChecker()
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(queues.router)
    app.include_router(tasks.router)
    app.include_router(dashboard.router)
    settings = conveyor.settings
    # Added last runs first: auth, then the body limit, then the app.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(BearerAuthMiddleware, tokens=settings.api_tokens)
    return app
