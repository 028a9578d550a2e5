"""How results travel: the size every result is held to, and where it is shown in full.

A result is encoded to JSON once, by the process that ran the task (:func:`encode_result`,
which also refuses one over ``CONVEYOR_MAX_RESULT_BYTES``); stores keep those bytes as
they are. The job's record is the one place a result is kept in full. Events
(``job_completed``) and job listings carry a result only up to :data:`INLINE_RESULT_MAX`
bytes; a larger one is left out of them and named by its size
(:func:`omitted_result`), and a client that wants it reads the job.
"""

from __future__ import annotations

from typing import Any

from conveyor.errors import ResultTooLargeError
from conveyor.serialization import dumps

#: The largest result (bytes of JSON) shown in a ``job_completed`` event or a listing.
#: Small enough that a page of events (1,000) or of jobs (500) stays a few megabytes.
INLINE_RESULT_MAX = 4096


def encode_result(value: Any, *, limit: int, what: str) -> bytes:
    """``value`` as JSON, held to ``limit`` bytes.

    Args:
        value: what the task returned.
        limit: the most bytes allowed (``CONVEYOR_MAX_RESULT_BYTES``).
        what: how messages name the value ("result of task 'report'").

    Raises:
        SerializationError: ``value`` has no JSON form.
        ResultTooLargeError: its JSON is longer than ``limit``.
    """
    encoded = dumps(value, what=what)
    if len(encoded) > limit:
        raise ResultTooLargeError(what, len(encoded), limit)
    return encoded


def omitted_result(size: int) -> dict[str, Any]:
    """What an event or a listing shows instead of a result of ``size`` bytes of JSON."""
    return {"resultOmitted": True, "resultBytes": size}


def inline_result(value: Any, size: int) -> dict[str, Any]:
    """``{"result": value}`` for a result of at most :data:`INLINE_RESULT_MAX` bytes,
    else :func:`omitted_result`."""
    if size > INLINE_RESULT_MAX:
        return omitted_result(size)
    return {"result": value}
