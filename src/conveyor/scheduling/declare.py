"""Schedules declared in code: what ``@app.cron`` and ``@app.every`` build.

A declaration registers the function as a task (unless it already is one) and keeps a
:class:`~conveyor.backends.base.Schedule` with ``source="code"`` on the app. Every
scheduler replica upserts the app's declarations into the store when it starts, so code
is the source of truth for them: an edit in code replaces the stored definition, while
``enabled`` (which the API may change) and the run state are kept.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from conveyor.backends.base import MisfirePolicy, OverlapPolicy, Schedule
from conveyor.errors import ConfigurationError, ValidationError
from conveyor.scheduling.schedule import plan_next_run, validate_schedule
from conveyor.task import Task

if TYPE_CHECKING:
    from conveyor.app import Conveyor
    from conveyor.backends.base import Backend


def declare(
    app: Conveyor,
    fn: Callable[..., Any] | Task[Any, Any],
    *,
    cron: str | None,
    interval: float | None,
    timezone: str,
    name: str | None,
    queue: str | None,
    priority: int | None,
    args: Sequence[Any],
    kwargs: dict[str, Any] | None,
    jitter: float,
    misfire_policy: MisfirePolicy | str,
    max_drift: float,
    overlap: OverlapPolicy | str,
    enabled: bool,
    task_options: dict[str, Any],
) -> Task[Any, Any]:
    """Register ``fn`` as a task (if it is not one) and declare its schedule.

    The schedule's id is ``name``, else the task's name. Stacking declarations on one
    task (``@app.cron(..., name="a")`` over ``@app.cron(..., name="b")``) gives it
    several schedules.

    Raises:
        ValidationError: invalid cron, time zone, interval, or arguments the task cannot
            take (raised at import time, not when the schedule first fires).
        ConfigurationError: a schedule with that id is already declared.
    """
    is_task = isinstance(fn, Task)
    type_name = fn.name if isinstance(fn, Task) else str(name or getattr(fn, "__name__", ""))
    if is_task and task_options:
        raise ConfigurationError(
            f"{type_name!r} is already a task: give its options to @app.task, not to the schedule"
        )
    schedule = Schedule(
        id=name or type_name,
        type=type_name,
        cron=cron,
        interval=None if interval is None else float(interval),
        timezone=timezone,
        enabled=enabled,
        queue=queue,
        priority=priority,
        jitter=float(jitter),
        misfire_policy=MisfirePolicy(misfire_policy),
        max_drift=float(max_drift),
        overlap=OverlapPolicy(overlap),
        source="code",
    )
    # Everything but the arguments is checked before the task is registered, so a
    # refused declaration leaves no half-registered task behind.
    validate_schedule(schedule)
    if schedule.id in app.schedules:
        raise ConfigurationError(
            f"a schedule named {schedule.id!r} is already declared; pass name= to tell them apart"
        )
    if isinstance(fn, Task):
        task: Task[Any, Any] = fn
    else:
        options: dict[str, Any] = {**task_options, "name": name}
        if queue:
            options["queue"] = queue
        task = app.task(**options)(fn)
    try:
        schedule.args, schedule.kwargs = task.bind(args, kwargs or {})
    except ValidationError:
        if not is_task:
            del app.tasks[task.name]
        raise
    app.schedules[schedule.id] = schedule
    return task


def _definition(schedule: Schedule) -> Schedule:
    """The schedule without what the store, the API or the scheduler may change."""
    return dataclasses.replace(
        schedule,
        enabled=True,
        created_at=0.0,
        updated_at=0.0,
        next_run_at=None,
        last_run_at=None,
        last_job_id=None,
    )


async def upsert_declared(app: Conveyor, backend: Backend) -> int:
    """Store the app's declared schedules where they differ from the stored ones.

    Returns how many were written. Unchanged ones are not written, so replicas that
    start together do not make the running leader reload for nothing.
    """
    if not app.schedules:
        return 0
    now = await backend.now()
    written = 0
    for declared in app.schedules.values():
        existing = await backend.get_schedule(declared.id)
        if existing is not None and existing.source == "code":
            comparable = dataclasses.replace(_definition(existing), source="code")
            if comparable == _definition(declared):
                continue
        fresh = dataclasses.replace(declared, updated_at=now)
        if existing is not None:
            fresh.created_at = existing.created_at  # keeps an interval's grid in place
            fresh.enabled = existing.enabled  # paused over the API stays paused
            fresh.last_run_at, fresh.last_job_id = existing.last_run_at, existing.last_job_id
        else:
            fresh.created_at = now
        plan_next_run(fresh, existing, now)
        await backend.save_schedule(fresh)
        written += 1
    return written
