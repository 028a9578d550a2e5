"""JSON codecs for everything that crosses a process boundary.

Conveyor never unpickles data from a store: arguments, results and records are JSON,
encoded with orjson. Besides plain JSON types, ``uuid.UUID`` and ``enum.Enum`` members are
accepted and arrive as their JSON value (a string, a number). Datetimes and dataclasses are
refused, so that what a task receives is exactly what was sent.
"""

from __future__ import annotations

from typing import Any

import orjson

from conveyor.errors import SerializationError

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def _refuse(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any, *, what: str = "value") -> bytes:
    """Encode ``value`` as JSON bytes.

    Raises:
        SerializationError: ``value`` holds something JSON cannot carry.
    """
    try:
        return orjson.dumps(value, default=_refuse, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise SerializationError(f"{what} must be JSON-serializable: {exc}") from None


def loads(data: bytes | str) -> Any:
    """Decode JSON bytes or text.

    Raises:
        SerializationError: ``data`` is not valid JSON.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"undecodable JSON: {exc}") from None
