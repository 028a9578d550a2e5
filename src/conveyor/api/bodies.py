"""Reading a JSON request body: its declared type, its presence, its decoding."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.exceptions import HTTPException

from conveyor.api.errors import shorten
from conveyor.api.middleware import JSON_REQUIRED, is_json_media_type
from conveyor.errors import SerializationError, ValidationError
from conveyor.serialization import loads_input


async def read_json_body(
    content_type: str | None, read_body: Callable[[], Awaitable[bytes]]
) -> Any:
    """The decoded body of a request that must carry JSON.

    Raises:
        HTTPException: 415, the body is declared as something else (413 from the body
            limit while reading).
        ValidationError: the body is missing, is not JSON, or holds a number that would
            not arrive exactly (see :mod:`conveyor.serialization`).
    """
    if content_type is not None and not is_json_media_type(content_type):
        raise HTTPException(415, JSON_REQUIRED)
    body = await read_body()
    if not body.strip():
        raise ValidationError("the request body is required", {"errors": []})
    try:
        return loads_input(body, what="the request body")
    except SerializationError as exc:
        raise ValidationError(
            "the request body is not valid JSON", {"reason": shorten(str(exc), 200)}
        ) from None
