"""Scheduling: cron and interval math, schedules, and the scheduler that fires them.

The API validates schedules with :func:`validate_schedule` and plans their next run with
:func:`plan_next_run`; processes that fire them run a :class:`Scheduler` (imported from
``conveyor.scheduling.scheduler``, which needs the app and its store).
"""

from conveyor.scheduling.schedule import (
    MIN_INTERVAL,
    build_job,
    fire_key,
    next_fire,
    plan_next_run,
    validate_id,
    validate_schedule,
)

__all__ = [
    "MIN_INTERVAL",
    "build_job",
    "fire_key",
    "next_fire",
    "plan_next_run",
    "validate_id",
    "validate_schedule",
]
