"""One error shape for every failure: ``{"error": {"code", "message", "details"}}``.

Conveyor's own exceptions, FastAPI's request validation errors and Starlette's HTTP
exceptions (unknown route, wrong method, ...) are all rendered here.

Only a store that says it cannot serve now (:class:`BackendUnavailableError`, which each
store raises for its own driver's connection, timeout, lock and disk errors) or cannot
be opened (:class:`ConfigurationError`) answers ``503 UNAVAILABLE``. Input is validated at
the edge, so no request can reach anything else; what does is a bug: it is logged with
its traceback and answered ``500 INTERNAL_ERROR``, still in the error shape and without
the traceback.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
import pydantic
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException
from starlette.responses import JSONResponse as _StarletteJSONResponse
from starlette.responses import Response
from starlette.routing import Match

from conveyor.errors import (
    BackendUnavailableError,
    ConfigurationError,
    ConflictError,
    ConveyorError,
    HistoryTruncatedError,
    JobNotFoundError,
    QueueFullError,
    SerializationError,
    ValidationError,
)

logger = logging.getLogger(__name__)

#: Seconds a client should wait before retrying when the store is unavailable.
UNAVAILABLE_RETRY_AFTER = 5

#: Error codes of the HTTP statuses Starlette and the middleware raise themselves.
CODE_OF_STATUS = {
    400: "BAD_REQUEST",
    401: "UNAUTHORIZED",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    405: "METHOD_NOT_ALLOWED",
    409: "CONFLICT",
    410: "GONE",
    413: "PAYLOAD_TOO_LARGE",
    415: "UNSUPPORTED_MEDIA_TYPE",
    422: "VALIDATION_ERROR",
    429: "RATE_LIMITED",
    503: "UNAVAILABLE",
}


class JSONResponse(_StarletteJSONResponse):
    """A JSON response encoded with orjson (a Starlette ``JSONResponse``, so that
    FastAPI documents response models for it)."""

    def render(self, content: Any) -> bytes:
        return orjson.dumps(content)


def error_body(code: str, message: str, details: Mapping[str, Any] | None = None) -> bytes:
    """Encode the error shape (never fails: undecodable details are dropped)."""
    try:
        return orjson.dumps({"error": {"code": code, "message": message, "details": details or {}}})
    except orjson.JSONEncodeError:  # e.g. a lone surrogate from a lenient ASGI server
        safe = message.encode("utf-8", "replace").decode("utf-8")
        return orjson.dumps({"error": {"code": code, "message": safe, "details": {}}})


def error_response(
    status: int,
    code: str,
    message: str,
    details: Mapping[str, Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> Response:
    """An error-shaped response."""
    return Response(
        error_body(code, message, details),
        status_code=status,
        headers=dict(headers or {}),
        media_type="application/json",
    )


def shorten(text: str, limit: int = 100) -> str:
    """Clip client-supplied text before echoing it back (and make it encodable)."""
    clipped = text if len(text) <= limit else text[:limit] + "…"
    return clipped.encode("utf-8", "replace").decode("utf-8")


def field_errors(errors: Sequence[Any], prefix: Sequence[str | int] = ()) -> list[dict[str, Any]]:
    """Field-level errors from pydantic, without the offending input (it may be huge).

    Each is ``{"loc": [...], "message": ..., "type": ...}``.
    """
    out: list[dict[str, Any]] = []
    for err in errors[:50]:
        loc = [
            part if isinstance(part, int) else shorten(str(part))
            for part in (*prefix, *err.get("loc", ()))
        ]
        out.append({"loc": loc, "message": str(err.get("msg", "")), "type": str(err.get("type"))})
    return out


def summarize(errors: list[dict[str, Any]], what: str) -> str:
    """One line naming the first failing field."""
    if not errors:
        return what
    first = errors[0]
    where = ".".join(str(part) for part in first["loc"])
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{what}: {where}: {first['message']}{more}"


def validation_error(
    exc: pydantic.ValidationError, what: str, prefix: Sequence[str | int] = ()
) -> ValidationError:
    """Turn a pydantic error into Conveyor's, with field-level details."""
    errors = field_errors(exc.errors(include_url=False, include_input=False), prefix)
    return ValidationError(summarize(errors, what), {"errors": errors})


def conveyor_error_response(exc: ConveyorError) -> Response:
    """The answer to a Conveyor error, in the error shape, with the status its kind has."""
    if isinstance(exc, ValidationError):
        return error_response(422, exc.code, exc.message, exc.details)
    if isinstance(exc, SerializationError):
        return error_response(422, "VALIDATION_ERROR", str(exc))
    if isinstance(exc, JobNotFoundError):
        job_id = shorten(exc.job_id)
        return error_response(404, "NOT_FOUND", f"job {job_id!r} not found", {"jobId": job_id})
    if isinstance(exc, ConflictError):
        return error_response(409, "CONFLICT", str(exc))
    if isinstance(exc, HistoryTruncatedError):
        details = {"lastEventId": exc.after, "oldestEventId": exc.oldest, "lost": exc.lost}
        return error_response(410, "HISTORY_TRUNCATED", str(exc), details)
    if isinstance(exc, QueueFullError):
        retry_after = str(max(1, math.ceil(exc.retry_after)))
        return error_response(
            429,
            "QUEUE_FULL",
            str(exc),
            {"queue": exc.queue, "retryAfter": exc.retry_after},
            {"Retry-After": retry_after},
        )
    if isinstance(exc, BackendUnavailableError):
        return _unavailable({"reason": str(exc)})
    if isinstance(exc, ConfigurationError):  # a store URL that cannot be opened
        logger.error("request failed: %s", exc)
        return _unavailable({})
    # A store refusing an operation for good, or a core error no request can cause.
    return internal_error(exc)


def _unavailable(details: Mapping[str, Any]) -> Response:
    return error_response(
        503,
        "UNAVAILABLE",
        "the job store is unavailable; retry later",
        details,
        {"Retry-After": str(UNAVAILABLE_RETRY_AFTER)},
    )


def internal_error(exc: BaseException, where: str = "a request") -> Response:
    """Log a bug with its traceback; the answer says only ``INTERNAL_ERROR``.

    Args:
        exc: the exception nothing else handled.
        where: what failed, for the log.
    """
    logger.error("unhandled error in %s", where, exc_info=exc)
    return error_response(500, "INTERNAL_ERROR", "internal error")


async def _on_conveyor_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ConveyorError)
    return conveyor_error_response(exc)


async def _on_request_validation(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)
    raw = [
        {"loc": e.get("loc", ()), "msg": e.get("msg", ""), "type": e.get("type", "")}
        for e in exc.errors()
    ]
    errors = field_errors(raw)
    return error_response(
        422, "VALIDATION_ERROR", summarize(errors, "invalid request"), {"errors": errors}
    )


async def http_exception_response(request: Request, exc: Exception) -> Response:
    """The answer to a Starlette ``HTTPException`` (a 405, a 413...), in the error shape."""
    assert isinstance(exc, HTTPException)
    code = CODE_OF_STATUS.get(exc.status_code, "HTTP_ERROR")
    message = exc.detail if isinstance(exc.detail, str) else code.replace("_", " ").lower()
    if exc.status_code == 404 and message == "Not Found":
        message = f"no such resource: {shorten(request.url.path)}"
    elif exc.status_code == 405 and message == "Method Not Allowed":
        message = f"method {shorten(request.method, 20)} is not allowed here"
    headers = exc.headers
    if exc.status_code == 405:
        headers = {**(exc.headers or {}), "Allow": _allowed_methods(request)}
    return error_response(exc.status_code, code, message, headers=headers)


def _allowed_methods(request: Request) -> str:
    """Every method some route of this path takes (Starlette names only the first route's,
    when several routes share a path)."""
    methods: set[str] = set()
    for route in request.app.router.routes:
        match, _ = route.matches({**request.scope, "method": "\x00"})
        if match is Match.PARTIAL:
            methods |= set(getattr(route, "methods", None) or ())
    return ", ".join(sorted(methods))


async def _on_unexpected(request: Request, exc: Exception) -> Response:
    return internal_error(exc, f"{request.method} {shorten(request.url.path)}")


def install_error_handlers(app: FastAPI) -> None:
    """Route every failure of ``app`` to the error shape."""
    app.add_exception_handler(ConveyorError, _on_conveyor_error)
    app.add_exception_handler(RequestValidationError, _on_request_validation)
    app.add_exception_handler(HTTPException, http_exception_response)
    app.add_exception_handler(Exception, _on_unexpected)
