"""Cron expressions: parsing, validation and next-fire computation. Pure; no I/O.

Accepted forms:

- 5 fields ``minute hour day-of-month month day-of-week``;
- 6 fields with **seconds first** (``"0/30 * * * * ?"`` fires at :00 and :30), as the
  Quartz scheduler and the HTTP API write them;
- 7 fields: the 6 above plus a year;
- macros ``@yearly @annually @monthly @weekly @daily @midnight @hourly``.

Fields take ``*``, lists, ranges, steps (``*/5``, ``0/30``, ``10-40/10``), month and day
names (``JAN``, ``MON-FRI``), ``?`` (no specific value, Quartz), ``L`` (last day of the
month), ``nW`` (nearest weekday) and ``DAY#n`` (n-th weekday of the month). Matching and
iteration use croniter; this module adds validation with clear messages, time zones, and
the daylight-saving rules below.

Daylight saving time, in the schedule's time zone:

- spring forward: a wall-clock time that does not exist that day (02:30 when clocks jump
  from 02:00 to 03:00) fires once, at the first instant after the gap;
- fall back: a wall-clock time that occurs twice fires once, at its first occurrence —
  unless the expression's hour field is ``*``, in which case the schedule keeps its
  cadence through the repeated hour (as cron daemons do).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter
from croniter.croniter import CroniterError

from conveyor.errors import ValidationError

MACROS = {
    "@yearly": "0 0 0 1 1 ?",
    "@annually": "0 0 0 1 1 ?",
    "@monthly": "0 0 0 1 * ?",
    "@weekly": "0 0 0 ? * SUN",
    "@daily": "0 0 0 * * ?",
    "@midnight": "0 0 0 * * ?",
    "@hourly": "0 0 * * * ?",
}

#: How far ahead a schedule may have no fire at all before it is refused as impossible.
MAX_YEARS_AHEAD = 10


def zone(name: str) -> ZoneInfo:
    """Return the IANA time zone ``name``.

    Raises:
        ValidationError: unknown zone (``details.field`` is ``timezone``).
    """
    try:
        if not name or len(name) > 64 or name.startswith(("/", ".")) or ".." in name:
            raise ZoneInfoNotFoundError(name)
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValidationError(
            f"unknown time zone {name!r}: use an IANA name such as 'UTC' or 'Europe/Paris'",
            {"field": "timezone"},
        ) from None


@dataclass(frozen=True, slots=True)
class Cron:
    """A validated cron expression in a time zone.

    Build with :meth:`parse`; use :meth:`next_after` for fire times.
    """

    expression: str
    timezone: str = "UTC"
    _seconds_form: str = field(default="", repr=False)
    _tz: ZoneInfo = field(default=ZoneInfo("UTC"), repr=False, compare=False)
    _hour_wildcard: bool = field(default=False, repr=False)

    @classmethod
    def parse(cls, expression: str, timezone: str = "UTC") -> Cron:
        """Validate ``expression`` and ``timezone``.

        Raises:
            ValidationError: with ``details.field`` naming ``cron`` or ``timezone``.
        """
        tz = zone(timezone)
        text = " ".join(expression.split())
        if not text or len(text) > 200:
            raise _invalid(expression, "must be 1-200 characters")
        normalized = MACROS.get(text.lower(), text)
        fields = normalized.split(" ")
        if len(fields) == 5:
            fields = ["0", *fields]
        if len(fields) not in (6, 7):
            raise _invalid(
                expression, f"has {len(fields)} fields; use 5, 6 (seconds first) or 7 (with year)"
            )
        seconds_form = " ".join(fields)
        try:
            if not croniter.is_valid(seconds_form, second_at_beginning=True):
                raise _invalid(expression, "is not a valid cron expression")
            probe = croniter(
                seconds_form,
                datetime(2000, 1, 1, tzinfo=UTC),
                second_at_beginning=True,
                # Wide enough for any year field a user may mean; an impossible date
                # (30 February) still fails here.
                max_years_between_matches=200,
            )
            probe.get_next(datetime)
        except CroniterError as exc:
            raise _invalid(expression, f"is not a valid cron expression ({exc})") from None
        hour = fields[2]
        return cls(
            expression=expression,
            timezone=timezone,
            _seconds_form=seconds_form,
            _tz=tz,
            _hour_wildcard=hour == "*" or hour.startswith("*/"),
        )

    def next_after(self, after: datetime) -> datetime | None:
        """The first fire time strictly after ``after`` (tz-aware), in UTC.

        Returns None when the expression has no fire in the next ten years (e.g. a year
        field in the past).
        """
        local = after.astimezone(self._tz)
        try:
            it = croniter(
                self._seconds_form,
                local,
                second_at_beginning=True,
                max_years_between_matches=MAX_YEARS_AHEAD,
            )
            for _ in range(4):
                candidate: datetime = it.get_next(datetime)
                if candidate.fold == 1 and not self._hour_wildcard:
                    # The second occurrence of a repeated wall-clock time (fall back):
                    # its first occurrence already fired.
                    continue
                when = candidate.astimezone(UTC)
                if when > after:
                    return when
        except CroniterError:
            return None
        return None


def next_interval(anchor: datetime, every: float, after: datetime) -> datetime:
    """The first ``anchor + k * every`` strictly after ``after`` (k ≥ 0, every > 0 s).

    Fires stay on the anchor's grid, so a late tick never drifts the schedule.
    """
    if after < anchor:
        return anchor
    elapsed = (after - anchor).total_seconds()
    k = int(elapsed // every) + 1
    when = anchor + timedelta(seconds=k * every)
    if when <= after:  # datetime keeps microseconds: rounding can land on `after` itself
        when = anchor + timedelta(seconds=(k + 1) * every)
    return when


def _invalid(expression: str, reason: str) -> ValidationError:
    return ValidationError(f"cron {expression!r} {reason}", {"field": "cron"})
