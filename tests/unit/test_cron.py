"""Cron and interval math: pure functions, no I/O."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from conveyor.errors import ValidationError
from conveyor.scheduling.cron import Cron, next_interval

NY = "America/New_York"


def fires(
    expression: str, tz: str, start: datetime, end: datetime, limit: int = 1000
) -> list[datetime]:
    """Fire times in ``(start, end]``, at most ``limit``."""
    cron = Cron.parse(expression, tz)
    out: list[datetime] = []
    while len(out) < limit:
        nxt = cron.next_after(out[-1] if out else start)
        if nxt is None or nxt > end:
            break
        out.append(nxt)
    return out


def test_quartz_seconds_first_with_question_mark() -> None:
    start = datetime(2026, 1, 1, tzinfo=UTC)
    got = fires("0/30 * * * * ?", "UTC", start, start + timedelta(minutes=1))
    assert [t.strftime("%M:%S") for t in got] == ["00:30", "01:00"]


@pytest.mark.parametrize(
    ("expression", "first"),
    [
        ("*/5 * * * *", "2026-01-01 00:05:00"),
        ("@hourly", "2026-01-01 01:00:00"),
        ("@daily", "2026-01-02 00:00:00"),
        ("0 0 12 L * ?", "2026-01-31 12:00:00"),
        ("0 0 12 ? * FRI#2", "2026-01-09 12:00:00"),
        ("0 0 9 ? JAN-MAR MON-FRI", "2026-01-01 09:00:00"),
        ("15 10-40/10 * * * ?", "2026-01-01 00:10:15"),
        ("0 0 0 1 1 ? 2028", "2028-01-01 00:00:00"),
    ],
)
def test_expressions(expression: str, first: str) -> None:
    got = Cron.parse(expression).next_after(datetime(2026, 1, 1, tzinfo=UTC))
    assert got is not None
    assert got.strftime("%Y-%m-%d %H:%M:%S") == first


def test_spring_forward_fires_a_missing_time_once() -> None:
    # 2026-03-08: New York clocks jump from 02:00 to 03:00; 02:30 does not exist.
    day = datetime(2026, 3, 8, tzinfo=ZoneInfo(NY))
    got = fires("0 30 2 * * *", NY, day, day + timedelta(days=1))
    assert len(got) == 1
    assert got[0].astimezone(ZoneInfo(NY)).strftime("%H:%M") == "03:00"


def test_fall_back_fires_a_repeated_time_once() -> None:
    # 2026-11-01: 01:00-02:00 happens twice in New York.
    day = datetime(2026, 11, 1, tzinfo=ZoneInfo(NY))
    got = fires("0 30 1 * * *", NY, day, day + timedelta(days=1))
    assert len(got) == 1
    assert got[0] == datetime(2026, 11, 1, 5, 30, tzinfo=UTC)  # the first 01:30 (EDT)


def test_fall_back_keeps_the_cadence_of_hourly_wildcards() -> None:
    day = datetime(2026, 11, 1, tzinfo=ZoneInfo(NY))
    got = fires("0 0 * * * *", NY, day, day + timedelta(days=1))
    assert len(got) == 25  # the day has 25 hours
    assert len(set(got)) == 25


def test_timezone_shifts_fires() -> None:
    after = datetime(2025, 12, 31, 23, 0, tzinfo=UTC)  # 08:00 in Tokyo
    got = Cron.parse("0 0 9 * * ?", "Asia/Tokyo").next_after(after)
    assert got == datetime(2026, 1, 1, 0, 0, tzinfo=UTC)


def test_expression_with_no_future_fire_gives_none() -> None:
    cron = Cron.parse("0 0 0 1 1 ? 2027")
    assert cron.next_after(datetime(2028, 1, 1, tzinfo=UTC)) is None


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "* * * *",
        "61 * * * *",
        "* * * * * * * *",
        "0 0 0 31 2 ?",
        "hello",
        "@every 5m",
        "* * 32 * *",
        "x" * 300,
    ],
)
def test_invalid_cron_names_the_field(expression: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Cron.parse(expression)
    assert caught.value.details == {"field": "cron"}


@pytest.mark.parametrize("tz", ["Mars/Olympus", "", "../etc/passwd", "/etc/localtime", "UTC+99"])
def test_invalid_timezone_names_the_field(tz: str) -> None:
    with pytest.raises(ValidationError) as caught:
        Cron.parse("* * * * *", tz)
    assert caught.value.details == {"field": "timezone"}


FIELDS5 = st.tuples(
    st.sampled_from(["*", "*/7", "0", "15,45", "10-20", "5-50/15"]),
    st.sampled_from(["*", "*/5", "0", "9-17", "3,23"]),
    st.sampled_from(["*", "1", "15", "L", "1-10"]),
    st.sampled_from(["*", "1", "JUN-AUG", "*/3"]),
    st.sampled_from(["*", "MON-FRI", "SUN", "1,3,5"]),
)


@settings(max_examples=300, deadline=None)
@given(
    fields=FIELDS5,
    after=st.datetimes(min_value=datetime(2000, 1, 1), max_value=datetime(2090, 1, 1)),
)
def test_utc_matches_the_reference_library(
    fields: tuple[str, str, str, str, str], after: datetime
) -> None:
    expression = " ".join(fields)
    start = after.replace(tzinfo=UTC)
    ours = Cron.parse(expression).next_after(start)
    reference = croniter(expression, start, max_years_between_matches=10).get_next(datetime)
    assert ours == reference
    assert ours > start
    assert croniter.match(expression, ours)


@settings(max_examples=200, deadline=None)
@given(
    anchor=st.datetimes(min_value=datetime(2020, 1, 1), max_value=datetime(2030, 1, 1)),
    every=st.floats(min_value=0.001, max_value=86_400 * 7),
    offset=st.floats(min_value=-1e6, max_value=1e7),
)
def test_interval_stays_on_its_grid(anchor: datetime, every: float, offset: float) -> None:
    anchor = anchor.replace(tzinfo=UTC)
    after = anchor + timedelta(seconds=offset)
    got = next_interval(anchor, every, after)
    if after < anchor:
        assert got == anchor
        return
    assert got > after
    steps = (got - anchor).total_seconds() / every
    assert abs(steps - round(steps)) < 1e-3 or steps == 0
    assert (got - after).total_seconds() <= every + 1e-3
