"""How one store event is shown to clients, over SSE and WebSocket alike."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import orjson

from conveyor.backends.base import Event
from conveyor.errors import HistoryTruncatedError
from conveyor.wire import format_instant

#: Every event type a store emits. ``job_released`` (a worker shut down and handed its
#: job back) is not in DESIGN's list but is passed through like the others.
EVENT_TYPES = frozenset(
    {
        "job_created",
        "job_started",
        "job_progress",
        "job_completed",
        "job_failed",
        "job_retrying",
        "job_cancelled",
        "job_released",
    }
)

#: The fields every rendered event has; a store's ``data`` may not override them.
_RESERVED = frozenset({"eventId", "type", "jobId", "at"})
#: What may follow ``id:`` on an SSE line (a newline would end the field early).
_SSE_SAFE_ID = re.compile(r"[\x21-\x7e]{1,200}", re.ASCII)


@dataclass(frozen=True, slots=True)
class Published:
    """An event rendered once, shared by every subscriber that receives it."""

    id: str
    type: str
    job_id: str
    json: str

    def sse(self) -> bytes:
        """The event as one SSE message (``id:`` lets the client resume after it)."""
        if _SSE_SAFE_ID.fullmatch(self.id):
            return f"id: {self.id}\ndata: {self.json}\n\n".encode()
        return f"data: {self.json}\n\n".encode()


def _camel(key: str) -> str:
    if "_" not in key:
        return key
    head, *rest = key.split("_")
    return head + "".join(part[:1].upper() + part[1:] for part in rest)


def render_event(event: Event) -> dict[str, Any]:
    """``{"eventId", "type", "jobId", "at", ...data}`` with camelCase data keys.

    Instants in ``data`` (keys ending in ``At`` holding epoch seconds, e.g. a retry's
    ``runAt``) are shown as RFC 3339, like every instant in the API.
    """
    out: dict[str, Any] = {
        "eventId": event.id,
        "type": event.type,
        "jobId": event.job_id,
        "at": format_instant(event.at),
    }
    for key, value in event.data.items():
        name = _camel(str(key))
        if name in _RESERVED:
            continue
        if name.endswith("At") and isinstance(value, int | float) and not isinstance(value, bool):
            value = format_instant(float(value))
        out[name] = value
    return out


def publish(event: Event) -> Published:
    """Render ``event`` to JSON once."""
    # Store data is decoded JSON, so it re-encodes; `default=str` only guards against a
    # store handing back something exotic, which must not kill the feed.
    body = orjson.dumps(render_event(event), default=str, option=orjson.OPT_NON_STR_KEYS)
    return Published(event.id, event.type, event.job_id, body.decode())


def truncated_frame(gap: HistoryTruncatedError) -> bytes:
    """An SSE ``event: history_truncated`` message: events after the reader's
    ``lastEventId`` were trimmed (retention); the stream goes on from ``oldestEventId``.

    It has no ``id:``, so a client's last event id stays that of the last event it got.
    """
    body = orjson.dumps({"lastEventId": gap.after, "oldestEventId": gap.oldest, "lost": gap.lost})
    return b"event: history_truncated\ndata: " + body + b"\n\n"


def error_frame(code: str, message: str, details: dict[str, Any]) -> bytes:
    """A final SSE ``event: error`` message in the API's error shape."""
    body = orjson.dumps({"error": {"code": code, "message": message, "details": details}})
    return b"event: error\ndata: " + body + b"\n\n"
