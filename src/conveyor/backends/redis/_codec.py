"""How a :class:`~conveyor.job.Job` is laid out in its Redis hash, and back.

Fields the scripts read or change are separate hash fields (short names, listed in
``scripts/lib.lua``); what only Python reads (arguments, timeout, callback settings) is
one orjson blob ``d``. Values are JSON or decimal text, never pickle.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from conveyor.backends.base import Event
from conveyor.errors import SerializationError, ValidationError
from conveyor.job import Job, JobStatus
from conveyor.serialization import dumps, loads


def static_blob(job: Job) -> str:
    """The JSON of the fields no script reads (``None`` values left out)."""
    what = f"arguments of job {job.id}"
    data: dict[str, Any] = {"args": job.args, "kwargs": job.kwargs}
    for name, value in (
        ("timeout", job.timeout),
        ("idem", job.idempotency_key),
        ("cbu", job.callback_url),
        ("cbs", job.callback_secret),
        ("wh", job.webhook),
    ):
        if value is not None:
            data[name] = value
    return dumps(data, what=what).decode()


def pairs(flat: Sequence[str]) -> dict[str, str]:
    """``[k1, v1, k2, v2, ...]`` (as HGETALL answers inside a script) as a dict."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _float(text: str | None) -> float | None:
    return None if text is None or text == "" else float(text)


def _json(text: str | None) -> Any:
    if not text:  # absent, or emptied by a script
        return None
    try:
        return loads(text)
    except SerializationError:
        return text  # written by hand: show it rather than fail the read


def job_from_hash(job_id: str, h: dict[str, str]) -> Job:
    """Rebuild a job from its hash fields."""
    static = _json(h.get("d")) or {}
    if not isinstance(static, dict):
        static = {}
    return Job(
        id=job_id,
        type=h.get("t", ""),
        args=static.get("args", []),
        kwargs=static.get("kwargs", {}),
        queue=h.get("q", ""),
        priority=int(h.get("pr", 0)),
        status=JobStatus(h.get("s", "pending")),
        progress=int(h.get("p", 0)),
        result=_json(h.get("res")),
        error=_json(h.get("e")),
        attempts=int(h.get("a", 0)),
        max_retries=int(h.get("m", 0)),
        timeout=static.get("timeout"),
        created_at=float(h.get("ca", 0.0)),
        run_at=float(h.get("r", 0.0)),
        started_at=_float(h.get("sa")),
        completed_at=_float(h.get("c")),
        idempotency_key=static.get("idem"),
        callback_url=static.get("cbu"),
        callback_secret=static.get("cbs"),
        webhook=_json(h.get("wh")) or static.get("wh"),  # `wh`: written by the deliverer
        lease_owner=h.get("o") or None,
        lease_expires_at=_float(h.get("l")),
    )


def time_arg(value: float) -> str:
    """A float as ARGV text; ``repr`` round-trips exactly."""
    return repr(float(value))


_CURSOR = re.compile(r"(\d+)-(\d+)(?:\.(\d+))?(?:-(.+))?", re.ASCII | re.DOTALL)


def event_id(stream_id: str, queue: str | None = None, index: int | None = None) -> str:
    """The feed cursor of an event: zero-padded so ids sort as strings.

    ``index`` is the event's position in its entry (entries written by ``flush_events``
    hold one script call's events); entries of older versions held one event and have
    none. On a cluster each queue has its own feed; the queue name is appended.
    """
    ms, _, seq = stream_id.partition("-")
    base = f"{int(ms):015d}-{int(seq or 0):010d}"
    if index is not None:
        base = f"{base}.{index:04d}"
    return base if queue is None else f"{base}-{queue}"


def parse_event_id(cursor: str) -> tuple[str, str | None]:
    """``(stream id, queue or None)`` of a cursor made by :func:`event_id`.

    Raises:
        ValidationError: the cursor was not made by :func:`event_id`.
    """
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise ValidationError(f"invalid event cursor {cursor!r}", {"cursor": cursor})
    return f"{int(match[1])}-{int(match[2])}", match[4]


def events_from_entry(
    entry_id: str, fields: dict[str, str], queue: str | None = None
) -> list[Event]:
    """The events of one feed entry: a batch (fields ``a``, ``e``) or, written by older
    versions, a single event (fields ``t``, ``j``, ``a``, ``d``)."""
    at = _float(fields.get("a")) or 0.0
    batch = fields.get("e")
    if batch is None:
        data = _json(fields.get("d"))
        return [
            Event(
                id=event_id(entry_id, queue),
                type=fields.get("t", "unknown"),
                job_id=fields.get("j", ""),
                at=at,
                data=data if isinstance(data, dict) else {},
            )
        ]
    items = _json(batch)
    if not isinstance(items, list):  # written by hand: one placeholder keeps it visible
        items = [["unknown", "", {}]]
    out: list[Event] = []
    for n, item in enumerate(items):
        kind, job_id, data = item if isinstance(item, list) and len(item) == 3 else ("", "", {})
        out.append(
            Event(
                id=event_id(entry_id, queue, n),
                type=kind if isinstance(kind, str) and kind else "unknown",
                job_id=job_id if isinstance(job_id, str) else "",
                at=at,
                data=data if isinstance(data, dict) else {},
            )
        )
    return out
