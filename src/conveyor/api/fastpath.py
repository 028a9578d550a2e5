"""A raw ASGI path for ``POST /api/v1/jobs``, the one hot endpoint.

It answers exactly what the FastAPI route answers (both call
:func:`conveyor.api.routes.jobs.submit`, and errors go through the same handlers), but
skips FastAPI's routing, dependency solving and request-object plumbing. It sits inside
all the middleware (Host, Origin, auth, body), so it still applies. Every other request, and any
submit this path does not take on itself (a duplicated ``Content-Type`` or
``Idempotency-Key`` header, an ``Idempotency-Key`` FastAPI would refuse), goes to the
app unchanged. The route stays registered, so the OpenAPI document still describes it.
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.api.errors import conveyor_error_response, http_exception_response
from conveyor.api.middleware import route_path
from conveyor.api.submission import Submitter
from conveyor.errors import ConveyorError
from conveyor.limits import IDEMPOTENCY_KEY_MAX

#: The path served here (relative to ``root_path``).
SUBMIT_PATH = "/api/v1/jobs"


class SubmitFastPath:
    """Serve ``POST /api/v1/jobs`` directly; pass everything else to ``app``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or route_path(scope) != SUBMIT_PATH:
            await self.app(scope, receive, send)
            return
        content_type: bytes | None = None
        key: bytes | None = None
        for name, value in scope["headers"]:
            if name == b"content-type":
                if content_type is not None:
                    await self.app(scope, receive, send)
                    return
                content_type = value
            elif name == b"idempotency-key":
                if key is not None:
                    await self.app(scope, receive, send)
                    return
                key = value
        # Headers decode as Latin-1, as Starlette decodes them.
        idempotency_key = None if key is None else key.decode("latin-1")
        if idempotency_key is not None and not 1 <= len(idempotency_key) <= IDEMPOTENCY_KEY_MAX:
            await self.app(scope, receive, send)  # FastAPI's own 422 for the header
            return
        request = Request(scope, receive)
        response: Response
        try:
            submitter: Submitter = scope["app"].state.submitter
            response = await submitter.answer_http(
                scope,
                None if content_type is None else content_type.decode("latin-1"),
                request.body,
                idempotency_key,
            )
        except ConveyorError as exc:
            response = conveyor_error_response(exc)
        except HTTPException as exc:  # 415; 413 from the body limit
            response = await http_exception_response(request, exc)
        # Anything else is a bug or a vanished client: it reaches the app's outermost
        # error middleware exactly as from the route.
        await response(scope, receive, send)
