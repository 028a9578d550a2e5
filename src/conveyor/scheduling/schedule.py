"""Schedules: validation, fire times, missed-fire planning and the job of one fire. Pure.

A schedule fires on a cron expression (in its time zone) or every ``interval`` seconds.
Interval fires sit on a grid anchored at the schedule's ``created_at``
(``created_at + k * interval``, k ≥ 1), so a late tick or a scheduler handover never
drifts the cadence, and every scheduler replica computes the same fire times.

Each fire time is an identity: its job carries the idempotency key
``schedule:{id}:{fire time in epoch ms}`` (see :func:`fire_key`), so two schedulers that
both believe they lead cannot enqueue one fire twice.
"""

from __future__ import annotations

import math
import random
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from conveyor.backends.base import MisfirePolicy, OverlapPolicy, Schedule
from conveyor.errors import ValidationError
from conveyor.job import Job
from conveyor.limits import PRIORITY_MAX, TASK_NAME_MAX, check_queue
from conveyor.scheduling.cron import Cron, zone
from conveyor.serialization import dumps
from conveyor.task import JobOptions, new_job

if TYPE_CHECKING:
    from conveyor.app import Conveyor

#: The shortest interval. More than ten jobs a second from one schedule is a producer
#: loop, not a schedule; the floor also bounds how many fires a handover catches up.
MIN_INTERVAL = 0.1
#: The longest interval, jitter and max drift: ten years.
MAX_SECONDS = 315_360_000.0
#: The most jitter a fire may be delayed by: one day.
MAX_JITTER = 86_400.0
#: Schedule ids appear in URLs and idempotency keys.
SCHEDULE_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@-]{0,199}", re.ASCII)
#: Fields of a schedule that decide when it fires (a change re-plans the next run).
TIMING_FIELDS = ("cron", "interval", "timezone", "created_at")
#: Fields set by the scheduler and the store, not by whoever defines the schedule.
RUN_STATE_FIELDS = ("next_run_at", "last_run_at", "last_job_id")


def _error(field: str, message: str) -> ValidationError:
    return ValidationError(message, {"field": field})


@dataclass(frozen=True, slots=True)
class Timing:
    """When a schedule fires: a parsed cron expression, or an interval on its grid."""

    cron: Cron | None
    interval: float | None
    anchor: float

    def next_after(self, after: float) -> float | None:
        """The first fire time strictly after ``after`` (epoch seconds), or None when
        the schedule has no fire left (a cron year field in the past)."""
        if self.interval is not None:
            return _next_on_grid(self.anchor, self.interval, after)
        assert self.cron is not None
        nxt = self.cron.next_after(datetime.fromtimestamp(after, UTC))
        return None if nxt is None else nxt.timestamp()


def _next_on_grid(anchor: float, every: float, after: float) -> float:
    # cron.next_interval in float seconds: the scheduler calls this once per fire, and
    # datetime arithmetic would cost more than the rest of a fire.
    if after < anchor:
        return anchor
    k = math.floor((after - anchor) / every) + 1
    when = anchor + k * every
    if when <= after:  # float rounding landed on `after` itself
        when = anchor + (k + 1) * every
    return when


def validate_id(schedule_id: str) -> str:
    """Return ``schedule_id`` if it can name a schedule.

    Raises:
        ValidationError: ``details.field`` is ``id``.
    """
    if not isinstance(schedule_id, str) or not SCHEDULE_ID.fullmatch(schedule_id):
        raise _error(
            "id",
            "schedule id must be 1-200 characters: letters, digits and _ . : @ -, "
            "starting with a letter or digit",
        )
    return schedule_id


def compile_timing(schedule: Schedule) -> Timing:
    """Check the timing fields and parse them.

    Raises:
        ValidationError: ``details.field`` names ``cron``, ``interval`` or ``timezone``.
    """
    zone(schedule.timezone)  # checked for interval schedules too: it is shown and kept
    if schedule.cron is not None and schedule.interval is not None:
        raise _error("cron", "give cron or interval, not both")
    if schedule.interval is not None:
        every = schedule.interval
        if isinstance(every, bool) or not MIN_INTERVAL <= every <= MAX_SECONDS:
            raise _error(
                "interval", f"interval must be {MIN_INTERVAL} to {MAX_SECONDS:.0f} seconds"
            )
        return Timing(None, float(every), schedule.created_at)
    if schedule.cron is None:
        raise _error("cron", "give cron (an expression) or interval (seconds)")
    return Timing(Cron.parse(schedule.cron, schedule.timezone), None, schedule.created_at)


def validate_schedule(schedule: Schedule) -> Timing:
    """Check everything about a schedule except that its task type is registered (the
    API and ``@app.cron`` check that; a scheduler fires unknown types anyway, see
    :func:`build_job`). Returns its parsed timing.

    Raises:
        ValidationError: ``details.field`` names the offending field.
    """
    validate_id(schedule.id)
    if not schedule.type or len(schedule.type) > TASK_NAME_MAX:
        raise _error("type", f"type must be a task name of 1-{TASK_NAME_MAX} characters")
    timing = compile_timing(schedule)
    if isinstance(schedule.jitter, bool) or not 0 <= schedule.jitter <= MAX_JITTER:
        raise _error("jitter", f"jitter must be 0 to {MAX_JITTER:.0f} seconds")
    if not 0 < schedule.max_drift <= MAX_SECONDS:
        raise _error("maxDrift", "maxDrift must be a positive number of seconds")
    if schedule.queue is not None:
        check_queue(schedule.queue)
    if schedule.priority is not None and not -PRIORITY_MAX <= schedule.priority <= PRIORITY_MAX:
        raise _error("priority", f"priority must be within ±{PRIORITY_MAX:,}")
    MisfirePolicy(schedule.misfire_policy)
    OverlapPolicy(schedule.overlap)
    dumps([schedule.args, schedule.kwargs], what=f"parameters of schedule {schedule.id!r}")
    return timing


def next_fire(schedule: Schedule, after: float) -> float | None:
    """The schedule's first fire strictly after ``after``; None when disabled or done.

    Raises:
        ValidationError: the timing fields are invalid.
    """
    if not schedule.enabled:
        return None
    return compile_timing(schedule).next_after(after)


def same_timing(a: Schedule, b: Schedule) -> bool:
    """True when both fire at the same times."""
    return all(getattr(a, f) == getattr(b, f) for f in TIMING_FIELDS)


def plan_next_run(new: Schedule, old: Schedule | None, now: float) -> None:
    """Set ``new.next_run_at`` for a schedule about to be saved over ``old``.

    The planned next run is kept when the timing did not change and the schedule stays
    enabled (an edit of parameters must not skip or repeat a fire); otherwise it is the
    first fire after ``now``. A disabled schedule has none.
    """
    if not new.enabled:
        new.next_run_at = None
    elif old is not None and old.enabled and old.next_run_at is not None and same_timing(new, old):
        new.next_run_at = old.next_run_at
    else:
        new.next_run_at = next_fire(new, now)


@dataclass(frozen=True, slots=True)
class FirePlan:
    """What one due schedule does now.

    Attributes:
        times: the fire times to enqueue a job for (each is its own idempotency key).
        next_run_at: the fire after those, or None when the schedule has no fire left.
        missed: True when fire times older than the grace period were folded into one
            (``run_once``) or dropped (``skip``, or older than ``max_drift``).
    """

    times: list[float]
    next_run_at: float | None
    missed: bool = False


def plan_fires(
    timing: Timing,
    first: float,
    now: float,
    *,
    grace: float,
    misfire: MisfirePolicy,
    max_drift: float,
    limit: int = 1000,
) -> FirePlan:
    """Plan the fires of a schedule whose next run, ``first``, may be due at ``now``.

    Fire times at most ``grace`` seconds old (a scheduler handover, a slow tick) are all
    caught up, one job each. Older ones were missed while no scheduler ran: ``skip``
    drops them; ``run_once`` fires once for all of them — keyed by ``first``, the one
    time every replica agrees on — if the latest is within ``max_drift``.

    Args:
        timing: the schedule's parsed timing.
        first: its planned next run (as stored).
        now: the store's time.
        grace: seconds a fire may be late and still fire on its own.
        misfire: what to do about older fire times.
        max_drift: how old a missed fire may be for ``run_once`` to make up for it.
        limit: the most fire times planned at once (the rest are dropped as missed).
    """
    if first > now:
        return FirePlan([], first)
    times: list[float] = []
    boundary = now - grace
    missed = False
    current: float | None = first
    if first < boundary:
        missed = True
        if misfire is MisfirePolicy.RUN_ONCE:
            # Some missed time lies within max_drift of now: the first one does, or the
            # first fire after now - max_drift comes before the grace boundary.
            oldest_allowed = now - max_drift
            if first >= oldest_allowed:
                times.append(first)
            else:
                recent = timing.next_after(oldest_allowed)
                if recent is not None and recent < boundary:
                    times.append(first)
        current = timing.next_after(boundary)
    while current is not None and current <= now:
        if len(times) >= limit:
            missed = True
            current = timing.next_after(now)
            break
        times.append(current)
        current = timing.next_after(current)
    return FirePlan(times, current, missed)


def fire_key(schedule_id: str, fire_time: float) -> str:
    """The idempotency key of one fire: ``schedule:{id}:{epoch ms}``."""
    return f"schedule:{schedule_id}:{round(fire_time * 1000)}"


def jittered(fire_time: float, jitter: float) -> float:
    """When the job of a fire may run: the fire time plus up to ``jitter`` seconds."""
    return fire_time + random.uniform(0.0, jitter) if jitter > 0 else fire_time


def build_job(app: Conveyor, schedule: Schedule, run_at: float, key: str | None) -> Job:
    """The job of one fire (not yet stored).

    Arguments are the schedule's as stored (already bound when it was saved). Queue and
    priority come from the schedule, else from the task, like everything else.

    A schedule whose task is not registered in this process still gets its job: the
    workers may know the task (they may run newer code than this scheduler), and if none
    does, the job fails visibly on a worker with reason ``unknown_task`` instead of the
    fire vanishing. Such a job gets no retries.
    """
    task = app.tasks.get(schedule.type)
    options = JobOptions(
        run_at=run_at, queue=schedule.queue, priority=schedule.priority, idempotency_key=key
    )
    return new_job(
        schedule.type,
        None if task is None else task.options_,
        list(schedule.args),
        dict(schedule.kwargs),
        options,
        0.0,  # created_at: the store stamps it with its own clock, as it does run times
    )
