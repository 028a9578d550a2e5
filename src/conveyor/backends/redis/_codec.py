"""How a :class:`~conveyor.job.Job` is laid out in its Redis hash, and back.

Fields the scripts read or change are separate hash fields (short names, listed in
``scripts/lib.lua``); what only Python reads (arguments, timeout, callback settings) is
one orjson blob ``d``. Values are JSON or decimal text, never pickle.
"""

from __future__ import annotations

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


def event_id(stream_id: str, queue: str | None = None) -> str:
    """The feed cursor of a stream entry: zero-padded so ids sort as strings.

    On a cluster each queue has its own feed; the queue name is appended.
    """
    ms, _, seq = stream_id.partition("-")
    base = f"{int(ms):015d}-{int(seq or 0):010d}"
    return base if queue is None else f"{base}-{queue}"


def parse_event_id(cursor: str) -> tuple[str, str | None]:
    """``(stream id, queue or None)`` of a cursor made by :func:`event_id`.

    Raises:
        ValidationError: the cursor was not made by :func:`event_id`.
    """
    parts = cursor.split("-", 2)
    if len(parts) < 2 or not parts[0].isdigit() or not parts[1].isdigit():
        raise ValidationError(f"invalid event cursor {cursor!r}", {"cursor": cursor})
    return f"{int(parts[0])}-{int(parts[1])}", parts[2] if len(parts) == 3 else None


def event_from_entry(entry_id: str, fields: dict[str, str], queue: str | None = None) -> Event:
    """An event from its stream entry (fields ``t``, ``j``, ``a``, ``d``)."""
    data = _json(fields.get("d"))
    return Event(
        id=event_id(entry_id, queue),
        type=fields.get("t", "unknown"),
        job_id=fields.get("j", ""),
        at=_float(fields.get("a")) or 0.0,
        data=data if isinstance(data, dict) else {},
    )
