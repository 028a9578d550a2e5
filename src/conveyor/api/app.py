"""The API app factory."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from conveyor.api.batching import SubmitBatcher
from conveyor.api.browser import SameOriginMiddleware
from conveyor.api.consumers import ConsumerWatch
from conveyor.api.errors import JSONResponse, install_error_handlers
from conveyor.api.events import EventHub
from conveyor.api.fastpath import SubmitFastPath
from conveyor.api.middleware import BearerAuthMiddleware, BodyLimitMiddleware, JSONBodyMiddleware
from conveyor.api.params import ParameterChecker
from conveyor.api.routes import (
    dashboard,
    events,
    health,
    jobs,
    queues,
    schedules,
    tasks,
    workers,
    ws,
)
from conveyor.api.submission import Submitter
from conveyor.app import Conveyor


def create_app(
    conveyor: Conveyor, *, fast_submit: bool = True, bind_host: str | None = None
) -> FastAPI:
    """Build the HTTP API for ``conveyor``.

    All state lives on the returned app (``app.state``); several apps can serve several
    Conveyor instances in one process. The app does not close ``conveyor``: whoever
    created it owns it.

    Args:
        conveyor: the application whose tasks are submitted and whose store is read.
            ``settings.api_tokens`` turns on bearer auth; ``settings.max_body_bytes``
            bounds request bodies; ``settings.allowed_origins`` and
            ``settings.allowed_hosts`` widen the checks of
            :class:`~conveyor.api.browser.SameOriginMiddleware`.
        fast_submit: serve ``POST /api/v1/jobs`` through the raw ASGI path of
            :mod:`conveyor.api.fastpath` (same answers, less overhead); off, the FastAPI
            route serves it.
        bind_host: the address or name the server listens on, accepted as a ``Host``
            (IP addresses and ``localhost`` always are).

    ``app.state.event_hub`` feeds the event stream and WebSocket; its poller starts with
    the first listener and stops at shutdown. A server that waits for open responses
    before shutting an app down (uvicorn does) should call ``event_hub.close()`` when it
    starts to stop, so that event streams end at once.
    """
    hub = EventHub(conveyor)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        hub.reopen()
        try:
            yield
        finally:
            await hub.aclose()

    app = FastAPI(
        title="Conveyor",
        summary="Submit, inspect, cancel and retry background jobs.",
        version="1",
        default_response_class=JSONResponse,
        docs_url="/docs",
        redoc_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.conveyor = conveyor
    app.state.event_hub = hub
    app.state.parameter_checker = ParameterChecker()
    app.state.consumer_watch = ConsumerWatch()
    app.state.submitter = Submitter(
        conveyor, app.state.parameter_checker, SubmitBatcher(conveyor), app.state.consumer_watch
    )
    install_error_handlers(app)
    app.include_router(health.router)
    app.include_router(jobs.router)
    app.include_router(queues.router)
    app.include_router(workers.router)
    app.include_router(tasks.router)
    app.include_router(schedules.router)
    app.include_router(events.router)
    app.include_router(ws.router)
    app.include_router(dashboard.router)
    settings = conveyor.settings
    # Added last runs first: Host and Origin, auth, the body limit, the JSON body check,
    # then the submit fast path, then the app.
    if fast_submit:
        app.add_middleware(SubmitFastPath)
    app.add_middleware(JSONBodyMiddleware)
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.max_body_bytes)
    app.add_middleware(BearerAuthMiddleware, tokens=settings.api_tokens)
    app.add_middleware(
        SameOriginMiddleware,
        allowed_origins=settings.allowed_origins,
        # With tokens, auth protects the API and any Host (a proxy's) is fine.
        allowed_hosts=None if settings.api_tokens else settings.allowed_hosts,
        bind_host=bind_host,
    )
    return app
