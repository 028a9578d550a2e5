"""Live workers and delivery bookkeeping (webhook state, cursors) of the in-memory store."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

from conveyor.backends.base import WorkerInfo
from conveyor.job import Job


class RegistryMixin:
    """``WorkerRegistry`` and ``DeliveryLog`` for :class:`InMemoryBackend`."""

    _lock: threading.Lock
    _clock: Callable[[], float]
    _jobs: dict[str, Job]

    def _init_registry(self) -> None:
        self._workers: dict[str, tuple[WorkerInfo, float]] = {}  # id -> (info, expiry)
        self._cursors: dict[str, str] = {}

    # -- workers ---------------------------------------------------------------------
    async def register_worker(self, info: WorkerInfo, ttl: float) -> None:
        now = float(self._clock())
        with self._lock:
            self._workers[info.id] = (info, now + ttl)

    async def unregister_worker(self, worker_id: str) -> None:
        with self._lock:
            self._workers.pop(worker_id, None)

    async def list_workers(self) -> list[WorkerInfo]:
        now = float(self._clock())
        with self._lock:
            for worker_id, (_, expiry) in list(self._workers.items()):
                if expiry <= now:
                    del self._workers[worker_id]
            return sorted((info for info, _ in self._workers.values()), key=lambda w: w.id)

    # -- delivery log ----------------------------------------------------------------
    async def record_webhook(self, job_id: str, state: dict[str, Any]) -> None:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.webhook = dict(state)

    async def get_cursor(self, name: str) -> str | None:
        with self._lock:
            return self._cursors.get(name)

    async def set_cursor(self, name: str, value: str) -> None:
        with self._lock:
            self._cursors[name] = value
