"""Schedules: saved, listed, versioned, fired and deleted the same way by every store."""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable

from conveyor.backends.base import Backend, Fire, MisfirePolicy, OverlapPolicy, Schedule


def _schedule(schedule_id: str = "nightly", **fields: object) -> Schedule:
    base: dict[str, object] = {"type": "report", "cron": "0 0 * * *", "created_at": 100.0}
    base.update(fields)
    return Schedule(id=schedule_id, **base)  # type: ignore[arg-type]


async def test_save_and_get_round_trip_every_field(backend: Backend) -> None:
    full = Schedule(
        id="every-field",
        type="report",
        args=[1, "two"],
        kwargs={"x": {"nested": [1.5, None, True]}},
        interval=2.5,
        timezone="Europe/Paris",
        enabled=False,
        queue="reports",
        priority=-7,
        jitter=0.25,
        misfire_policy=MisfirePolicy.SKIP,
        max_drift=60.0,
        overlap=OverlapPolicy.SKIP,
        source="code",
        created_at=1_700_000_000.123456,
        updated_at=1_700_000_001.5,
        next_run_at=1_700_000_002.123456789,
        last_run_at=1_699_999_999.25,
        last_job_id="0190-job",
    )
    assert await backend.save_schedule(full) == full
    assert await backend.get_schedule("every-field") == full
    minimal = _schedule("minimal")
    await backend.save_schedule(minimal)
    assert await backend.get_schedule("minimal") == minimal
    assert await backend.get_schedule("missing") is None


async def test_save_replaces_and_list_orders_by_id(backend: Backend) -> None:
    for name in ("b", "c", "a"):
        await backend.save_schedule(_schedule(name))
    await backend.save_schedule(_schedule("b", cron=None, interval=5.0))
    listed = await backend.list_schedules()
    assert [s.id for s in listed] == ["a", "b", "c"]
    assert listed[1].interval == 5.0
    assert listed[1].cron is None


async def test_version_changes_on_save_and_delete_only(backend: Backend) -> None:
    v0 = await backend.schedules_version()
    await backend.save_schedule(_schedule())
    v1 = await backend.schedules_version()
    assert v1 != v0
    await backend.record_fires([Fire("nightly", 200.0, 300.0, "job-1")])
    assert await backend.schedules_version() == v1
    assert await backend.delete_schedule("nightly")
    v2 = await backend.schedules_version()
    assert v2 not in (v0, v1)
    assert not await backend.delete_schedule("nightly")
    assert await backend.schedules_version() == v2


async def test_record_fires_keeps_run_state_in_one_batch(backend: Backend) -> None:
    for name in ("a", "b", "c"):
        await backend.save_schedule(_schedule(name, next_run_at=150.0))
    await backend.record_fires(
        [
            Fire("a", 150.0, 160.0, "job-a"),
            Fire("b", 150.0, None, "job-b"),  # the schedule has no fire left
            Fire("ghost", 150.0, 160.0, "job-g"),  # deleted meanwhile: not revived
        ]
    )
    a, b, c = await backend.list_schedules()
    assert (a.next_run_at, a.last_run_at, a.last_job_id) == (160.0, 150.0, "job-a")
    assert (b.next_run_at, b.last_run_at, b.last_job_id) == (None, 150.0, "job-b")
    assert (c.next_run_at, c.last_run_at, c.last_job_id) == (150.0, None, None)
    assert await backend.get_schedule("ghost") is None
    # A skipped fire (no job) moves the next run only.
    await backend.record_fires([Fire("a", 160.0, 170.0, None)])
    a2 = await backend.get_schedule("a")
    assert a2 is not None
    assert (a2.next_run_at, a2.last_run_at, a2.last_job_id) == (170.0, 150.0, "job-a")
    # The definition is untouched by fires.
    assert dataclasses.replace(a2, next_run_at=None, last_run_at=None, last_job_id=None) == (
        _schedule("a")
    )


async def test_many_fires_in_one_call(backend: Backend) -> None:
    ids = [f"s{i:04d}" for i in range(1500)]
    await asyncio.gather(
        *(backend.save_schedule(_schedule(i, interval=1.0, cron=None)) for i in ids)
    )
    await backend.record_fires([Fire(i, 10.0, 11.0, f"job-{i}") for i in ids])
    listed = await backend.list_schedules()
    assert len(listed) == 1500
    assert all(s.next_run_at == 11.0 and s.last_job_id == f"job-{s.id}" for s in listed)


async def test_another_handle_sees_changes(
    backend: Backend, make_backend: Callable[[], Backend]
) -> None:
    other = make_backend()
    await other.open()
    try:
        before = await other.schedules_version()
        await backend.save_schedule(_schedule("shared"))
        assert await other.schedules_version() != before
        seen = await other.get_schedule("shared")
        assert seen is not None
        assert seen.cron == "0 0 * * *"
    finally:
        await other.aclose()


async def test_returned_schedules_are_copies(backend: Backend) -> None:
    await backend.save_schedule(_schedule("copy", kwargs={"a": 1}))
    got = await backend.get_schedule("copy")
    assert got is not None
    got.kwargs["a"] = 2
    got.enabled = False
    again = await backend.get_schedule("copy")
    assert again is not None
    assert again.kwargs == {"a": 1}
    assert again.enabled
