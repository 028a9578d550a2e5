"""The schedules of the Redis store (script: ``scripts/schedules.lua``)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from conveyor.backends._schedule_codec import definition_json, read_or_skip
from conveyor.backends.base import Fire, Schedule
from conveyor.backends.redis._base import RedisBase
from conveyor.backends.redis._codec import pairs, time_arg
from conveyor.backends.redis._connect import guarded
from conveyor.backends.redis._scripts import Arg

#: Fires recorded per script call: keeps one call's run time (the server is blocked
#: while a script runs) to a few milliseconds.
FIRES_PER_CALL = 1000


def _time(value: float | None) -> str:
    return "" if value is None else time_arg(value)


def _last(value: str | None) -> tuple[str | None, str | None]:
    """``"time|job id"`` split in two (either part may be empty)."""
    if not value:
        return None, None
    at, _, job = value.partition("|")
    return at or None, job or None


class SchedulesMixin(RedisBase):
    """``ScheduleStore`` on four keys tagged ``{sched}``: the definitions, next runs and
    last runs (hashes keyed by schedule id) and a version counter.

    Schedules are global, not per queue, so they share one slot of their own; the
    scheduler reads them once per change (``schedules_version`` is one GET) and records
    fires in batches, so that slot is not a hot spot.
    """

    def _schedule_keys(self) -> list[str]:
        tag = f"{self._g.prefix}:{{sched}}"
        return [f"{tag}:defs", f"{tag}:next", f"{tag}:last", f"{tag}:version"]

    async def _schedules_call(self, op: str, *args: Arg) -> Any:
        return await self.scripts["schedules"](
            self.client, self._schedule_keys(), [self._now_arg(), op, *args]
        )

    @guarded
    async def save_schedule(self, schedule: Schedule) -> Schedule:
        definition = definition_json(schedule)
        await self._schedules_call(
            "save",
            schedule.id,
            definition,
            _time(schedule.next_run_at),
            _time(schedule.last_run_at),
            schedule.last_job_id or "",
        )
        stored = read_or_skip(
            schedule.id,
            definition,
            schedule.next_run_at,
            schedule.last_run_at,
            schedule.last_job_id,
        )
        return stored or schedule

    @guarded
    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        definition, next_run, last = await self._schedules_call("get", schedule_id)
        if definition is None:
            return None
        return read_or_skip(schedule_id, definition, next_run, *_last(last))

    @guarded
    async def list_schedules(self) -> list[Schedule]:
        defs, nexts, lasts = await self._schedules_call("list")
        next_of, last_of = pairs(nexts), pairs(lasts)
        out: list[Schedule] = []
        for schedule_id, definition in sorted(pairs(defs).items()):
            found = read_or_skip(
                schedule_id, definition, next_of.get(schedule_id), *_last(last_of.get(schedule_id))
            )
            if found is not None:
                out.append(found)
        return out

    @guarded
    async def delete_schedule(self, schedule_id: str) -> bool:
        return bool(await self._schedules_call("delete", schedule_id))

    @guarded
    async def schedules_version(self) -> int:
        value = await self.client.get(self._schedule_keys()[3])
        return int(value or 0)

    @guarded
    async def record_fires(self, fires: Sequence[Fire]) -> None:
        for start in range(0, len(fires), FIRES_PER_CALL):
            args: list[Arg] = []
            for fire in fires[start : start + FIRES_PER_CALL]:
                args += [
                    fire.schedule_id,
                    _time(fire.next_run_at),
                    time_arg(fire.fired_at),
                    fire.job_id or "",
                ]
            await self._schedules_call("fires", *args)
