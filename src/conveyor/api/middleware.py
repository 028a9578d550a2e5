"""Pure ASGI middleware: bearer-token auth, the request body limit and JSON bodies.

Each acts on headers before any of the body is read, and answers in the error shape.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping, Sequence
from typing import Any

from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from conveyor.api.errors import error_body

#: Path prefixes that need a token when tokens are configured.
PROTECTED_PREFIXES = ("/api", "/ws", "/metrics")


#: The answer to a body that is not declared JSON.
JSON_REQUIRED = "the request body must be JSON (Content-Type: application/json)"


async def send_error(
    send: Send,
    status: int,
    code: str,
    message: str,
    extra_headers: Sequence[tuple[bytes, bytes]] = (),
    details: Mapping[str, Any] | None = None,
) -> None:
    """Answer an HTTP request with an error-shaped response, from middleware."""
    body = error_body(code, message, details)
    headers = [
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode()),
        *extra_headers,
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def route_path(scope: Scope) -> str:
    """The request's path as routed: without the app's ``root_path``."""
    path: str = scope.get("path", "")
    root: str = scope.get("root_path", "")
    return path[len(root) :] if root and path.startswith(root) else path


class BodyTooLargeError(HTTPException):
    """Raised from ``receive`` once a streamed body passes the limit."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"request body exceeds {limit} bytes")


class BodyLimitMiddleware:
    """Refuse request bodies over ``max_body_bytes`` with 413 PAYLOAD_TOO_LARGE.

    A declared ``Content-Length`` over the limit is refused before the app runs. Bodies
    without one (chunked) are counted as they stream; the app's read fails with
    :class:`BodyTooLargeError` as soon as the count passes the limit, so an oversized
    body is never held whole.
    """

    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit = self.max_body_bytes
        lengths = [v for k, v in scope.get("headers", ()) if k == b"content-length"]
        if lengths:
            if len(lengths) > 1 or not lengths[0].isdigit() or len(lengths[0]) > 19:
                await send_error(send, 400, "BAD_REQUEST", "invalid Content-Length header")
                return
            if int(lengths[0]) > limit:
                await send_error(
                    send,
                    413,
                    "PAYLOAD_TOO_LARGE",
                    f"request body exceeds {limit} bytes",
                    [(b"connection", b"close")],
                )
                return

        received = 0
        started = False

        async def limited_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    raise BodyTooLargeError(limit)
            return message

        async def tracked_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, tracked_send)
        except BodyTooLargeError as exc:
            if started:
                raise
            await send_error(
                send, 413, "PAYLOAD_TOO_LARGE", str(exc.detail), [(b"connection", b"close")]
            )


def is_json_media_type(content_type: str) -> bool:
    """Whether a ``Content-Type`` is JSON: ``application/json`` or ``application/*+json``,
    with any parameters (``; charset=utf-8``)."""
    media = content_type.partition(";")[0].strip().lower()
    return media == "application/json" or (
        media.startswith("application/") and media.endswith("+json")
    )


class JSONBodyMiddleware:
    """Refuse a POST, PUT or PATCH body not declared JSON with 415 UNSUPPORTED_MEDIA_TYPE.

    Every body the API takes is JSON. Holding to the declared type also keeps web pages
    out: a browser sends a cross-site body without a CORS preflight only as ``text/plain``,
    a form type, or with no type at all. Requests without a body (cancel, retry, pause,
    trigger) need no ``Content-Type``.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] not in ("POST", "PUT", "PATCH"):
            await self.app(scope, receive, send)
            return
        has_body = False
        types: list[bytes] = []
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                has_body |= not value.isdigit() or int(value) > 0
            elif name == b"transfer-encoding":
                has_body = True
            elif name == b"content-type":
                types.append(value)
        if has_body and (len(types) != 1 or not is_json_media_type(types[0].decode("latin-1"))):
            await send_error(send, 415, "UNSUPPORTED_MEDIA_TYPE", JSON_REQUIRED)
            return
        await self.app(scope, receive, send)


def _presented_token(scope: Scope) -> bytes | None:
    """The bearer token of ``Authorization``; for a WebSocket without that header, of
    a ``bearer.<token>`` subprotocol (browsers cannot set headers on a WebSocket)."""
    headers = scope.get("headers", ())
    values = [v for k, v in headers if k == b"authorization"]
    if values:
        if len(values) != 1:
            return None
        scheme, _, token = values[0].strip().partition(b" ")
        return token.strip() if scheme.lower() == b"bearer" else None
    if scope["type"] != "websocket":
        return None
    offered = [
        part.strip() for k, v in headers if k == b"sec-websocket-protocol" for part in v.split(b",")
    ]
    tokens = [p[7:] for p in offered if p[:7].lower() == b"bearer."]
    return tokens[0] if len(tokens) == 1 else None


class BearerAuthMiddleware:
    """Require ``Authorization: Bearer <token>`` on /api, /ws and /metrics.

    A WebSocket handshake may carry the token as a ``bearer.<token>`` subprotocol instead.

    Every configured token is compared in constant time (no early exit), so timing
    reveals neither which token nor how much of one matched.
    """

    def __init__(self, app: ASGIApp, tokens: Sequence[str]) -> None:
        self.app = app
        self._tokens = [token.encode() for token in tokens]

    def _protected(self, scope: Scope) -> bool:
        path = route_path(scope)
        return any(path == p or path.startswith(p + "/") for p in PROTECTED_PREFIXES)

    def _authorized(self, scope: Scope) -> bool:
        token = _presented_token(scope)
        if not token:
            return False
        matched = False
        for candidate in self._tokens:
            matched |= hmac.compare_digest(token, candidate)
        return matched

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] not in ("http", "websocket")
            or not self._tokens
            or not self._protected(scope)
            or self._authorized(scope)
        ):
            await self.app(scope, receive, send)
            return
        if scope["type"] == "websocket":
            # Refusing before accept makes the server answer the handshake with 403.
            await send({"type": "websocket.close", "code": 1008, "reason": "unauthorized"})
            return
        await send_error(
            send,
            401,
            "UNAUTHORIZED",
            "a valid bearer token is required",
            [(b"www-authenticate", b"Bearer")],
        )
