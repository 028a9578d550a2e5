"""How a :class:`~conveyor.job.Job` is laid out in its Redis hash, and back.

Fields the scripts read or change on the hot path are separate hash fields (short
names, listed in ``scripts/lib.lua``); what never changes and scripts read only on rare
paths (task type, retry budget, arguments, timeout, callback settings) is one orjson blob
``d``. Values are JSON or decimal text, never pickle.

Few fields matter: Redis keeps a small hash as one flat list, so each field written or
read is a scan of the record, and each value read by a script is converted into Lua and
back.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from conveyor.backends._common import created_event_data, invalid_event_cursor
from conveyor.backends.base import Event
from conveyor.errors import SerializationError
from conveyor.job import Job, JobStatus
from conveyor.results import INLINE_RESULT_MAX, omitted_result
from conveyor.serialization import dumps, loads


def static_blob(job: Job) -> str:
    """The JSON of the fields that never change (``None`` values left out)."""
    what = f"arguments of job {job.id}"
    data: dict[str, Any] = {
        "t": job.type,
        "m": job.max_retries,
        "args": job.args,
        "kwargs": job.kwargs,
    }
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


def _int(value: Any) -> int:
    """An integer field, or 0 when it was written by hand as something else."""
    try:
        return int(value or 0)
    except (TypeError, ValueError):
        return 0


def _json(text: str | None) -> Any:
    if not text:  # absent, or emptied by a script
        return None
    try:
        return loads(text)
    except SerializationError:
        return text  # written by hand: show it rather than fail the read


def lease_owner(token: str) -> str:
    """The worker a lease token was handed to (tokens read ``<number>@<owner>``)."""
    return token.partition("@")[2]


def last_lease(field: str | None) -> tuple[int, float | None, str]:
    """Attempts, start and token of a record's last lease (field ``l``:
    ``<attempts> <started> <token>``, or attempts alone after a release)."""
    if not field:
        return 0, None, ""
    attempts, _, rest = field.partition(" ")
    started, _, token = rest.partition(" ")
    try:
        return int(attempts), _float(started), token
    except ValueError:  # written by hand
        return 0, None, ""


#: The fields :func:`job_from_hash` reads, but the result (``res``): what a listing
#: reads of a record (HMGET) before it knows the result's size (HSTRLEN).
FIELDS_BUT_RESULT = ("d", "q", "pr", "ca", "r", "s", "l", "p", "c", "e", "wh")


def job_from_hash(job_id: str, h: dict[str, str], lease_deadline: float | None = None) -> Job:
    """Rebuild a job from its hash fields (and, while it runs, its lease deadline: the
    score of its token, see ``scripts/lib.lua``)."""
    static = _json(h.get("d")) or {}
    if not isinstance(static, dict):
        static = {}
    status = JobStatus(h.get("s", "pending"))
    running = status is JobStatus.RUNNING  # lease fields of an ended attempt stay behind
    created_at = float(h.get("ca", 0.0))
    run_at = _float(h.get("r"))
    completed = status is JobStatus.COMPLETED
    attempts, started_at, token = last_lease(h.get("l"))
    return Job(
        id=job_id,
        type=str(static.get("t", "")),
        args=static.get("args", []),
        kwargs=static.get("kwargs", {}),
        queue=h.get("q", ""),
        priority=_int(h.get("pr")),
        status=status,
        progress=100 if completed else _int(h.get("p")),
        result=_json(h.get("res")),
        error=None if completed else _json(h.get("e")),
        attempts=attempts,
        max_retries=_int(static.get("m")),
        timeout=static.get("timeout"),
        created_at=created_at,
        run_at=created_at if run_at is None else run_at,
        started_at=started_at,
        completed_at=_float(h.get("c")),
        idempotency_key=static.get("idem"),
        callback_url=static.get("cbu"),
        callback_secret=static.get("cbs"),
        webhook=_json(h.get("wh")) or static.get("wh"),  # `wh`: written by the deliverer
        lease_owner=(lease_owner(token) or None) if running else None,
        lease_expires_at=lease_deadline if running else None,
    )


def time_arg(value: float) -> str:
    """A float as ARGV text; ``repr`` round-trips exactly."""
    return repr(float(value))


_CURSOR = re.compile(
    r"0*(\d{1,20})-0*(\d{1,20})(?:\.(\d{1,9})(e)?)?(?:-(.+))?", re.ASCII | re.DOTALL
)
#: Both halves of a stream id are unsigned 64-bit numbers.
_MAX_STREAM_PART = 2**64 - 1
#: Where an id made by :func:`event_id` with an index has its ``e`` mark, if any.
_MARK = 31


def event_id(
    stream_id: str, queue: str | None = None, index: int | None = None, last: bool = False
) -> str:
    """The feed cursor of an event: zero-padded so ids sort as strings.

    ``index`` is the event's position in its entry (entries written by ``flush_events``
    hold one script call's events); entries of older versions held one event and have
    none. ``last`` marks the entry's last event with an ``e`` after the index: a reader
    whose cursor's entry was trimmed then knows whether it had the whole entry. On a
    cluster each queue has its own feed; the queue name is appended.
    """
    ms, _, seq = stream_id.partition("-")
    base = f"{int(ms):015d}-{int(seq or 0):010d}"
    if index is not None:
        base = f"{base}.{index:04d}{'e' if last else ''}"
    return base if queue is None else f"{base}-{queue}"


def cursor_order(event_id: str) -> str:
    """The id as it sorts in the feed: without the last-event mark, so that a cursor
    issued before the mark existed still points at the same event."""
    if len(event_id) > _MARK and event_id[_MARK] == "e" and event_id[26] == ".":
        return event_id[:_MARK] + event_id[_MARK + 1 :]
    return event_id


@dataclass(frozen=True, slots=True)
class EventCursor:
    """A cursor made by :func:`event_id`, taken apart.

    Args:
        entry: the stream id of its entry, as ``(milliseconds, sequence)``.
        last: whether nothing follows it in its entry (its ``e`` mark, or an entry of an
            older version: one event).
        queue: the queue whose feed holds it (on a cluster), else None.
        order: what :func:`cursor_order` says of it.
    """

    entry: tuple[int, int]
    last: bool
    queue: str | None
    order: str

    @property
    def stream_id(self) -> str:
        """The entry's id as Redis writes it."""
        return f"{self.entry[0]}-{self.entry[1]}"


def parse_event_id(cursor: str) -> EventCursor:
    """Take apart a cursor made by :func:`event_id`.

    Raises:
        ValidationError: the cursor was not made by :func:`event_id`, or names a stream
            id beyond what Redis can hold.
    """
    match = _CURSOR.fullmatch(cursor)
    if match is None:
        raise invalid_event_cursor(cursor, "not an id of this feed")
    entry = (int(match[1]), int(match[2]))
    if entry[0] > _MAX_STREAM_PART or entry[1] > _MAX_STREAM_PART:
        raise invalid_event_cursor(cursor, "beyond the highest stream id")
    index = None if match[3] is None else int(match[3])
    order = event_id(f"{entry[0]}-{entry[1]}", match[5], index)
    return EventCursor(entry, index is None or match[4] is not None, match[5], order)


def stream_entry(stream_id: str) -> tuple[int, int]:
    """``(milliseconds, sequence)`` of a Redis stream id."""
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def events_from_entry(
    entry_id: str, fields: dict[str, str], queue: str | None = None
) -> list[Event]:
    """The events of one feed entry.

    Entries come in these forms (``a`` is always the time):

    - ``e``: a JSON array of ``[type, job id, data]``, one per event;
    - ``C`` (the queue), ``j``: ``job_created`` events of ``[id, type]`` pairs;
    - ``S`` (the worker), ``j``, ``n``: ``job_started`` events of the ids and attempts;
    - ``O`` (the queue), ``o``, ``f``: the outcomes' events as the worker sent them
      (see ``scripts/complete.lua``; older versions stored the outcomes themselves)
      and which of them applied, ``1`` or ``0`` each;
    - ``t``, ``j``, ``d``: a single event (written by older versions).

    Anything else (written by hand) shows as one ``unknown`` event, so it stays visible.
    """
    at = _float(fields.get("a")) or 0.0
    try:
        items = _items(fields)
    except (TypeError, ValueError, IndexError, SerializationError):
        items = [("unknown", "", {})]
    end = len(items) - 1
    return [
        Event(
            id=event_id(entry_id, queue, None if "t" in fields else n, n == end),
            type=kind if isinstance(kind, str) and kind else "unknown",
            job_id=job_id if isinstance(job_id, str) else "",
            at=at,
            data=data if isinstance(data, dict) else {},
        )
        for n, (kind, job_id, data) in enumerate(items)
    ]


def completion_slots(result: str, size: int) -> tuple[str, str]:
    """The result and error slots of a completion's event as ``complete.lua`` takes them
    (``ARGV[6]``): its result's JSON (``result``) and ``"null"``, or, for a result over
    :data:`~conveyor.results.INLINE_RESULT_MAX` bytes (``size``), ``"null"`` and its size."""
    if size > INLINE_RESULT_MAX:
        return "null", str(size)
    return result, "null"


_OUTCOME_EVENTS = {
    "c": "job_completed",
    "f": "job_failed",
    "r": "job_retrying",
    "x": "job_released",
}


def _items(fields: dict[str, str]) -> list[tuple[Any, Any, Any]]:
    if "e" in fields:
        batch = loads(fields["e"])
        if not isinstance(batch, list):
            raise ValueError("not a list of events")
        return [
            (item[0], item[1], item[2])
            if isinstance(item, list) and len(item) == 3
            else ("", "", {})
            for item in batch
        ]
    if "S" in fields:
        owner = fields["S"]
        ids, attempts = loads(fields["j"]), loads(fields["n"])
        return [
            ("job_started", job_id, {"attempt": attempt, "workerId": owner})
            for job_id, attempt in zip(ids, attempts, strict=True)
        ]
    if "C" in fields:
        queue = fields["C"]
        return [
            ("job_created", job_id, created_event_data(queue, task_type))
            for job_id, task_type in loads(fields["j"])
        ]
    if "O" in fields:
        queue = fields["O"]
        items: list[tuple[Any, Any, Any]] = []
        for o, flag in zip(loads(fields["o"]), fields["f"], strict=True):
            if flag != "1":
                continue
            if len(o) == 10:  # written by an older version
                job_id, _, _, attempt, kind, result, error, run_at, _, task_type = o
            else:
                job_id, attempt, kind, result, error, run_at, task_type = o
            data: dict[str, Any] = {"attempt": int(attempt), "queue": queue, "taskType": task_type}
            if kind == "c":
                # See `completion_slots` ("null" or "": a result sent along).
                omitted = error not in ("null", "")
                data.update(omitted_result(int(error)) if omitted else {"result": loads(result)})
            elif kind in ("f", "r"):
                data["error"] = loads(error)
            if kind == "r":
                data["runAt"] = float(run_at) if run_at else None
            items.append((_OUTCOME_EVENTS[kind], job_id, data))
        return items
    if "t" in fields:
        data = _json(fields.get("d"))
        return [(fields["t"], fields.get("j", ""), data)]
    return [("unknown", "", {})]
