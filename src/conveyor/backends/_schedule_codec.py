"""How a :class:`~conveyor.backends.base.Schedule` is stored by the SQLite and Redis stores.

A schedule is split in two: its *definition* (what an API call or ``@app.cron`` sets),
kept as one JSON document, and its *run state* (``next_run_at``, ``last_run_at``,
``last_job_id``), kept apart because the scheduler rewrites it on every fire without
touching, or re-reading, the definition.
"""

from __future__ import annotations

import logging
from typing import Any

from conveyor.backends.base import MisfirePolicy, OverlapPolicy, Schedule
from conveyor.serialization import dumps, loads

logger = logging.getLogger("conveyor.backends")


class CorruptScheduleError(ValueError):
    """A stored schedule that cannot be read back (hand-edited, truncated, foreign)."""


def definition_json(schedule: Schedule) -> str:
    """The JSON of every field but the run state (``None`` values left out)."""
    data: dict[str, Any] = {
        "type": schedule.type,
        "args": schedule.args,
        "kwargs": schedule.kwargs,
        "timezone": schedule.timezone,
        "enabled": schedule.enabled,
        "jitter": schedule.jitter,
        "misfire": schedule.misfire_policy.value,
        "drift": schedule.max_drift,
        "overlap": schedule.overlap.value,
        "source": schedule.source,
        "created": schedule.created_at,
        "updated": schedule.updated_at,
    }
    for name, value in (
        ("cron", schedule.cron),
        ("interval", schedule.interval),
        ("queue", schedule.queue),
        ("priority", schedule.priority),
    ):
        if value is not None:
            data[name] = value
    return dumps(data, what=f"schedule {schedule.id!r}").decode()


def _opt_float(value: Any) -> float | None:
    if value is None or value == "":
        return None
    return float(value)


def schedule_from_parts(
    schedule_id: str,
    definition: str | bytes,
    next_run_at: Any = None,
    last_run_at: Any = None,
    last_job_id: str | None = None,
) -> Schedule:
    """Rebuild a schedule from its stored definition and run state.

    Raises:
        CorruptScheduleError: the definition is not what :func:`definition_json` writes.
    """
    try:
        d = loads(definition)
        if not isinstance(d, dict) or not isinstance(d.get("type"), str):
            raise TypeError("not a schedule definition")
        args, kwargs = d.get("args", []), d.get("kwargs", {})
        if not isinstance(args, list) or not isinstance(kwargs, dict):
            raise TypeError("arguments must be a list and an object")
        cron, interval = d.get("cron"), _opt_float(d.get("interval"))
        if (cron is None) == (interval is None) or not isinstance(cron, str | None):
            raise TypeError("needs exactly one of cron and interval")
        priority = d.get("priority")
        return Schedule(
            id=schedule_id,
            type=d["type"],
            args=args,
            kwargs=kwargs,
            cron=cron,
            interval=interval,
            timezone=str(d.get("timezone", "UTC")),
            enabled=bool(d.get("enabled", True)),
            queue=None if d.get("queue") is None else str(d["queue"]),
            priority=None if priority is None else int(priority),
            jitter=float(d.get("jitter", 0.0)),
            misfire_policy=MisfirePolicy(d.get("misfire", MisfirePolicy.RUN_ONCE.value)),
            max_drift=float(d.get("drift", 3600.0)),
            overlap=OverlapPolicy(d.get("overlap", OverlapPolicy.ALLOW.value)),
            source=str(d.get("source", "api")),
            created_at=float(d.get("created", 0.0)),
            updated_at=float(d.get("updated", 0.0)),
            next_run_at=_opt_float(next_run_at),
            last_run_at=_opt_float(last_run_at),
            last_job_id=last_job_id or None,
        )
    except Exception as exc:  # any malformed field: the row is unusable as a whole
        raise CorruptScheduleError(f"schedule {schedule_id!r} is corrupt: {exc}") from None


def read_or_skip(schedule_id: str, *parts: Any) -> Schedule | None:
    """:func:`schedule_from_parts`, logging and returning None for a corrupt row, so that
    one bad row never hides the others from a listing or stops the scheduler."""
    try:
        return schedule_from_parts(schedule_id, *parts)
    except CorruptScheduleError as exc:
        logger.error("%s; skipped (fix or DELETE it)", exc)
        return None
