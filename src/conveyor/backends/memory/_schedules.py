"""The schedules of the in-memory store."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Sequence

from conveyor.backends.base import Fire, Schedule


def _copy(schedule: Schedule) -> Schedule:
    # Callers may mutate what they get (a dataclass with lists inside): hand out copies.
    return dataclasses.replace(schedule, args=list(schedule.args), kwargs=dict(schedule.kwargs))


class SchedulesMixin:
    """``ScheduleStore`` for :class:`InMemoryBackend`: a dict of schedules and a counter."""

    _lock: threading.Lock
    _schedules: dict[str, Schedule]
    _schedules_version: int

    def _init_schedules(self) -> None:
        self._schedules = {}
        self._schedules_version = 0

    async def save_schedule(self, schedule: Schedule) -> Schedule:
        with self._lock:
            self._schedules[schedule.id] = _copy(schedule)
            self._schedules_version += 1
        return _copy(schedule)

    async def get_schedule(self, schedule_id: str) -> Schedule | None:
        with self._lock:
            found = self._schedules.get(schedule_id)
            return None if found is None else _copy(found)

    async def list_schedules(self) -> list[Schedule]:
        with self._lock:
            return [_copy(self._schedules[k]) for k in sorted(self._schedules)]

    async def delete_schedule(self, schedule_id: str) -> bool:
        with self._lock:
            if self._schedules.pop(schedule_id, None) is None:
                return False
            self._schedules_version += 1
            return True

    async def schedules_version(self) -> int:
        return self._schedules_version

    async def record_fires(self, fires: Sequence[Fire]) -> None:
        with self._lock:
            for fire in fires:
                schedule = self._schedules.get(fire.schedule_id)
                if schedule is None:
                    continue  # deleted meanwhile: recording must not bring it back
                schedule.next_run_at = fire.next_run_at
                if fire.job_id is not None:
                    schedule.last_run_at = fire.fired_at
                    schedule.last_job_id = fire.job_id
