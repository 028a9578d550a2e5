"""JSON codecs for everything that crosses a process boundary.

Conveyor never unpickles data from a store: arguments, results and records are JSON,
encoded with orjson. Besides plain JSON types, ``uuid.UUID`` and ``enum.Enum`` members are
accepted and arrive as their JSON value (a string, a number). Datetimes and dataclasses are
refused, so that what a task receives is exactly what was sent.

Numbers arrive exactly as sent or not at all: integers from -2**63 to 2**64 - 1 and finite
floats. NaN and the infinities (which JSON cannot carry, and orjson would write as
``null``) and wider integers (which would come back as floats) are refused.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import orjson

from conveyor.errors import SerializationError

_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS

#: The integers a JSON number keeps exactly on its way through Conveyor (orjson's range).
INT_MIN, INT_MAX = -(2**63), 2**64 - 1
#: No integer literal shorter than this can fall outside that range.
_WIDE = re.compile(rb"\d{19}")


def _refuse(value: object) -> Any:
    raise TypeError(f"{type(value).__name__} is not JSON serializable")


def dumps(value: Any, *, what: str = "value") -> bytes:
    """Encode ``value`` as JSON bytes.

    Raises:
        SerializationError: ``value`` holds something JSON cannot carry.
    """
    try:
        out = orjson.dumps(value, default=_refuse, option=_OPTIONS)
    except (TypeError, orjson.JSONEncodeError) as exc:
        raise SerializationError(f"{what} must be JSON-serializable: {exc}") from None
    # orjson writes NaN and the infinities as null: look for them only when a null was
    # written, so that values without one pay nothing.
    if b"null" in out and _non_finite(value):
        raise SerializationError(
            f"{what} must be JSON-serializable: NaN and infinite floats have no JSON form"
        )
    return out


def _non_finite(value: Any) -> bool:
    if isinstance(value, float):
        return not math.isfinite(value)
    if isinstance(value, dict):
        return any(_non_finite(v) for v in value.values())
    if isinstance(value, (list, tuple)):
        return any(_non_finite(v) for v in value)
    return False


def loads(data: bytes | str) -> Any:
    """Decode JSON bytes or text.

    Raises:
        SerializationError: ``data`` is not valid JSON.
    """
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        raise SerializationError(f"undecodable JSON: {exc}") from None


def loads_input(data: bytes | str, *, what: str = "JSON") -> Any:
    """Decode JSON from outside (a request body, a message), refusing integers that
    would not arrive exactly (outside ``INT_MIN``..``INT_MAX``; orjson reads them as
    floats).

    Raises:
        SerializationError: ``data`` is not valid JSON, or holds such an integer.
    """
    value = loads(data)
    raw = data.encode() if isinstance(data, str) else data
    if _WIDE.search(raw):  # rare: check each integer exactly
        try:
            json.loads(raw, parse_int=_exact_int)
        except _WideIntegerError as exc:
            raise SerializationError(
                f"{what}: the integer {exc} is outside the range Conveyor keeps exact "
                f"({INT_MIN} to {INT_MAX}); send it as a string"
            ) from None
    return value


class _WideIntegerError(ValueError):
    pass


def _exact_int(literal: str) -> int:
    number = int(literal)
    if not INT_MIN <= number <= INT_MAX:
        shown = literal if len(literal) <= 40 else f"{literal[:20]}...({len(literal)} digits)"
        raise _WideIntegerError(shown)
    return number
