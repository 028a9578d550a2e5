"""Schedule validation, fire times and missed-fire planning: pure functions, no store."""

from __future__ import annotations

import pytest

from conveyor import Conveyor, Settings
from conveyor.backends.base import MisfirePolicy, OverlapPolicy, Schedule
from conveyor.errors import ConfigurationError, InvalidArgumentsError, ValidationError
from conveyor.scheduling.schedule import (
    Timing,
    build_job,
    compile_timing,
    fire_key,
    next_fire,
    plan_fires,
    plan_next_run,
    validate_schedule,
)

T0 = 1_800_000_000.0  # 2027-01-15T08:00:00Z, a whole minute


def every(seconds: float, anchor: float = T0) -> Timing:
    return compile_timing(Schedule(id="s", type="t", interval=seconds, created_at=anchor))


def field_of(exc: pytest.ExceptionInfo[ValidationError]) -> object:
    return exc.value.details.get("field")


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"cron": "* * * * *", "interval": 5.0}, "cron"),
        ({}, "cron"),
        ({"cron": "61 * * * *"}, "cron"),
        ({"cron": "* * * * *", "timezone": "Mars/Olympus"}, "timezone"),
        ({"interval": 0.05}, "interval"),
        ({"interval": 5.0, "jitter": -1.0}, "jitter"),
        ({"interval": 5.0, "max_drift": 0.0}, "maxDrift"),
        ({"interval": 5.0, "priority": 10**7}, "priority"),
        ({"interval": 5.0, "queue": "a/b"}, "queue"),
    ],
)
def test_invalid_schedules_name_the_field(fields: dict[str, object], field: str) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_schedule(Schedule(id="s", type="t", **fields))  # type: ignore[arg-type]
    assert field_of(exc) == field


@pytest.mark.parametrize("bad", ["", "-x", "a b", "a/b", "x" * 201, "é"])
def test_invalid_ids(bad: str) -> None:
    with pytest.raises(ValidationError) as exc:
        validate_schedule(Schedule(id=bad, type="t", interval=1.0))
    assert field_of(exc) == "id"


def test_interval_fires_on_a_grid_anchored_at_creation() -> None:
    timing = every(10.0)
    assert timing.next_after(T0 - 100) == T0
    assert timing.next_after(T0) == T0 + 10
    assert timing.next_after(T0 + 10) == T0 + 20
    assert timing.next_after(T0 + 10.5) == T0 + 20
    # Float rounding never returns `after` itself, for awkward intervals too.
    tenth = every(0.1)
    t = T0
    for _ in range(1000):
        nxt = tenth.next_after(t)
        assert nxt is not None
        assert nxt > t
        t = nxt
    assert t == pytest.approx(T0 + 100, abs=1e-6)


def test_cron_in_a_time_zone() -> None:
    timing = compile_timing(
        Schedule(id="s", type="t", cron="0 9 * * *", timezone="America/New_York")
    )
    nxt = timing.next_after(T0)  # 08:00Z is 03:00 in New York
    assert nxt == T0 + 6 * 3600  # 09:00 New York = 14:00Z
    seconds = compile_timing(Schedule(id="s", type="t", cron="*/30 * * * * *"))
    assert seconds.next_after(T0) == T0 + 30


def test_on_time_fire() -> None:
    plan = plan_fires(
        every(1.0), T0, T0 + 0.01, grace=5, misfire=MisfirePolicy.RUN_ONCE, max_drift=3600
    )
    assert plan.times == [T0]
    assert plan.next_run_at == T0 + 1
    assert not plan.missed


def test_not_due_yet() -> None:
    plan = plan_fires(every(1.0), T0, T0 - 1, grace=5, misfire=MisfirePolicy.SKIP, max_drift=1)
    assert plan.times == []
    assert plan.next_run_at == T0


def test_fires_within_the_grace_period_are_each_caught_up() -> None:
    # A handover took 3 s: every fire time of those 3 s gets its own job.
    plan = plan_fires(every(1.0), T0, T0 + 3.2, grace=5, misfire=MisfirePolicy.SKIP, max_drift=3600)
    assert plan.times == [T0, T0 + 1, T0 + 2, T0 + 3]
    assert plan.next_run_at == T0 + 4
    assert not plan.missed


def test_run_once_folds_missed_fires_into_one_keyed_by_the_first() -> None:
    # Down for 100 s, grace 5 s: one job for the 95 missed times, then the last 5 s.
    plan = plan_fires(
        every(1.0), T0, T0 + 100.5, grace=5, misfire=MisfirePolicy.RUN_ONCE, max_drift=3600
    )
    assert plan.missed
    assert plan.times[0] == T0
    assert plan.times[1:] == [T0 + 96, T0 + 97, T0 + 98, T0 + 99, T0 + 100]
    assert plan.next_run_at == T0 + 101


def test_skip_drops_missed_fires() -> None:
    plan = plan_fires(
        every(1.0), T0, T0 + 100.5, grace=5, misfire=MisfirePolicy.SKIP, max_drift=3600
    )
    assert plan.missed
    assert plan.times == [T0 + 96, T0 + 97, T0 + 98, T0 + 99, T0 + 100]


def test_run_once_ignores_fires_older_than_max_drift() -> None:
    hourly = compile_timing(Schedule(id="s", type="t", cron="0 * * * *"))
    # Down for 10 hours; max drift 30 min: the last missed hour is 30.5 min old.
    plan = plan_fires(
        hourly, T0, T0 + 10 * 3600 + 1830, grace=5, misfire=MisfirePolicy.RUN_ONCE, max_drift=1800
    )
    assert plan.missed
    assert plan.times == []
    assert plan.next_run_at == T0 + 11 * 3600
    # With a larger max drift it fires once, keyed by the first missed time.
    plan = plan_fires(
        hourly, T0, T0 + 10 * 3600 + 1830, grace=5, misfire=MisfirePolicy.RUN_ONCE, max_drift=7200
    )
    assert plan.times == [T0]


def test_replicas_with_different_views_never_reuse_a_key_for_another_fire() -> None:
    # Leader A fires at now_a and dies before recording; leader B re-plans from the
    # same stored next run later. Every time A fired is either planned again by B under
    # the same key, or covered by B's folded fire (key = the first missed time).
    timing = every(1.0)
    a = plan_fires(timing, T0, T0 + 10.5, grace=5, misfire=MisfirePolicy.RUN_ONCE, max_drift=99)
    b = plan_fires(timing, T0, T0 + 13.5, grace=5, misfire=MisfirePolicy.RUN_ONCE, max_drift=99)
    assert a.times[0] == b.times[0] == T0  # the folded fire: one key for both
    assert set(a.times[1:]) - set(b.times) <= {T0 + 6, T0 + 7, T0 + 8}  # folded by B


def test_limit_bounds_one_plan() -> None:
    plan = plan_fires(
        every(0.1), T0, T0 + 50, grace=60, misfire=MisfirePolicy.SKIP, max_drift=1, limit=100
    )
    assert len(plan.times) == 100
    assert plan.missed
    assert plan.next_run_at is not None
    assert plan.next_run_at > T0 + 50


def test_fire_key_is_epoch_milliseconds() -> None:
    assert fire_key("nightly", T0 + 0.25) == f"schedule:nightly:{int(T0 * 1000) + 250}"


def test_plan_next_run_keeps_the_plan_through_unrelated_edits() -> None:
    old = Schedule(id="s", type="t", interval=10.0, created_at=T0, next_run_at=T0 + 10)
    edited = Schedule(id="s", type="t", interval=10.0, created_at=T0, kwargs={"x": 1})
    plan_next_run(edited, old, T0 + 5)
    assert edited.next_run_at == T0 + 10
    retimed = Schedule(id="s", type="t", interval=3.0, created_at=T0)
    plan_next_run(retimed, old, T0 + 5)
    assert retimed.next_run_at == T0 + 6
    paused = Schedule(id="s", type="t", interval=3.0, created_at=T0, enabled=False)
    plan_next_run(paused, old, T0 + 5)
    assert paused.next_run_at is None
    assert next_fire(paused, T0) is None
    resumed = Schedule(id="s", type="t", interval=10.0, created_at=T0)
    plan_next_run(resumed, paused, T0 + 35)
    assert resumed.next_run_at == T0 + 40  # from now, not the stale plan


def test_build_job_takes_defaults_from_the_task_and_keeps_unknown_types() -> None:
    app = Conveyor(settings=Settings(url="memory://"))

    @app.task(queue="reports", retries=7, timeout=5, priority=3)
    async def report(day: str) -> None: ...

    known = build_job(
        app, Schedule(id="s", type="report", kwargs={"day": "mon"}, interval=1), T0, "k"
    )
    assert (known.queue, known.priority, known.max_retries, known.timeout) == ("reports", 3, 7, 5)
    assert known.kwargs == {"day": "mon"}
    assert known.idempotency_key == "k"
    assert known.run_at == T0
    gone = build_job(app, Schedule(id="s", type="removed", interval=1, priority=2), T0, None)
    assert (gone.type, gone.queue, gone.priority, gone.max_retries) == ("removed", "default", 2, 0)


def test_cron_decorator_registers_a_task_and_a_schedule() -> None:
    app = Conveyor(settings=Settings(url="memory://"))

    @app.cron("*/30 * * * * *", timezone="Europe/Paris", jitter=0.5, overlap="skip")
    async def tick() -> None: ...

    @app.cron("0 * * * *", name="hourly-report", kwargs={"kind": "hourly"})
    @app.cron("0 0 * * *", name="daily-report", kwargs={"kind": "daily"})
    @app.task(queue="reports")
    async def report(kind: str) -> None: ...

    @app.every(5, queue="fast")
    def beat() -> None: ...

    assert set(app.tasks) == {"tick", "report", "beat"}
    assert set(app.schedules) == {"tick", "hourly-report", "daily-report", "beat"}
    tick_schedule = app.schedules["tick"]
    assert tick_schedule.source == "code"
    assert tick_schedule.timezone == "Europe/Paris"
    assert tick_schedule.overlap is OverlapPolicy.SKIP
    assert app.schedules["daily-report"].kwargs == {"kind": "daily"}
    assert app.schedules["daily-report"].type == "report"
    assert app.schedules["beat"].interval == 5.0
    assert app.tasks["beat"].options_.queue == "fast"
    assert app.tasks["beat"].options_.mode == "thread"


def test_cron_decorator_refuses_mistakes_at_import_time() -> None:
    app = Conveyor(settings=Settings(url="memory://"))
    with pytest.raises(ValidationError) as exc:
        app.cron("not cron", name="bad")(lambda: None)
    assert field_of(exc) == "cron"
    with pytest.raises(ValidationError):
        app.cron("* * * * *", timezone="Nowhere/Land")(lambda: None)
    with pytest.raises(ValidationError):
        app.every(0.01, name="too-fast")(lambda: None)

    async def needs(x: int) -> None: ...

    with pytest.raises(InvalidArgumentsError):
        app.cron("* * * * *", name="needs")(needs)

    @app.cron("* * * * *")
    async def once() -> None: ...

    with pytest.raises(ConfigurationError):
        app.cron("* * * * *", name="once")(app.tasks["once"])
    assert "bad" not in app.tasks  # a refused declaration registers nothing
    assert "needs" not in app.tasks
