"""The :class:`InMemoryBackend` class."""

from __future__ import annotations

import asyncio
import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from conveyor.backends._common import (
    EVENT_OF_OUTCOME,
    QUEUE_FULL_RETRY_AFTER,
    accept_new,
    apply_outcome,
    created_event_data,
    lease_expired_error,
    leave_out_large_result,
    outcome_event_data,
    parse_event_number,
    reset_for_retry,
)
from conveyor.backends.base import (
    EnqueueResult,
    Event,
    JobFilter,
    JobPage,
    Outcome,
    QueueStats,
    Retention,
)
from conveyor.backends.memory._registry import RegistryMixin
from conveyor.backends.memory._schedules import SchedulesMixin
from conveyor.errors import ConflictError, HistoryTruncatedError, JobNotFoundError, QueueFullError
from conveyor.job import Job, JobStatus
from conveyor.serialization import dumps


class InMemoryBackend(RegistryMixin, SchedulesMixin):
    """A :class:`~conveyor.backends.base.Backend` that keeps everything in dicts and heaps.

    Args:
        url: ``memory://``.
        clock: the store's clock (seconds since the epoch); tests inject their own.
        retention: how long finished jobs (at :meth:`purge`) and events (as new ones
            are written) are kept.
    """

    def __init__(
        self,
        url: str = "memory://",
        *,
        clock: Any = time.time,
        retention: Retention | None = None,
    ) -> None:
        self.url = url
        self._clock = clock
        self.retention = retention or Retention()
        self._lock = threading.Lock()
        self._jobs: dict[str, Job] = {}
        # Ready jobs per queue: (-priority, seq, id). Delayed jobs: (run_at, seq, id).
        self._ready: dict[str, list[tuple[int, int, str]]] = {}
        self._delayed: dict[str, list[tuple[float, int, str]]] = {}
        self._entry: dict[str, int] = {}  # job id -> seq of its one live heap entry
        self._seq = itertools.count()
        self._running: dict[str, Job] = {}
        self._idempotency: dict[str, tuple[str, float]] = {}
        self._events: deque[Event] = deque()
        self._event_seq = itertools.count(1)
        self._trimmed_through = 0  # the number of the newest event trimmed
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()
        self._locks: dict[str, tuple[str, float, int]] = {}  # name -> (owner, expiry, token)
        self._max_length: dict[str, int] = {}
        self._paused: set[str] = set()
        self._init_registry()
        self._init_schedules()

    # -- lifecycle -------------------------------------------------------------------
    async def open(self) -> None:
        return None

    async def aclose(self) -> None:
        return None

    async def ping(self) -> None:
        return None

    async def now(self) -> float:
        return float(self._clock())

    # -- internals (lock held) -------------------------------------------------------
    def _emit(self, type_: str, job: Job, now: float, data: dict[str, Any] | None = None) -> None:
        event_id = f"{next(self._event_seq):020d}"
        self._events.append(Event(event_id, type_, job.id, now, data or {}))
        self._trim_events(now)

    def _trim_events(self, now: float) -> None:
        cutoff = now - self.retention.events
        events = self._events
        while events and events[0].at < cutoff:
            self._trimmed_through = int(events.popleft().id)

    def _schedule(self, job: Job, now: float) -> None:
        seq = next(self._seq)
        self._entry[job.id] = seq
        if job.run_at > now:
            heapq.heappush(self._delayed.setdefault(job.queue, []), (job.run_at, seq, job.id))
        else:
            heapq.heappush(self._ready.setdefault(job.queue, []), (-job.priority, seq, job.id))

    def _promote(self, queue: str, now: float) -> None:
        delayed = self._delayed.get(queue)
        ready = self._ready.setdefault(queue, [])
        while delayed and delayed[0][0] <= now:
            _, seq, job_id = heapq.heappop(delayed)
            job = self._jobs.get(job_id)
            if job is not None and self._entry.get(job_id) == seq:
                heapq.heappush(ready, (-job.priority, seq, job_id))

    def _pop_ready(self, queue: str) -> Job | None:
        ready = self._ready.get(queue)
        while ready:
            _, seq, job_id = heapq.heappop(ready)
            if self._entry.get(job_id) != seq:
                continue  # stale entry: the job was cancelled, retried or deleted
            del self._entry[job_id]
            job = self._jobs.get(job_id)
            if job is not None and job.status is JobStatus.PENDING:
                return job
        return None

    def _lease(self, job: Job, worker_id: str, now: float, lease_seconds: float) -> Job:
        job.status = JobStatus.RUNNING
        job.attempts += 1
        job.started_at = now
        job.lease_owner = worker_id
        job.lease_expires_at = now + lease_seconds
        self._running[job.id] = job
        self._emit("job_started", job, now, {"attempt": job.attempts, "workerId": worker_id})
        return job.copy()

    def _notify(self) -> None:
        for loop, event in list(self._waiters):
            try:
                loop.call_soon_threadsafe(event.set)
            except RuntimeError:  # that loop has closed
                self._waiters.discard((loop, event))

    # -- producing -------------------------------------------------------------------
    async def enqueue(self, jobs: Sequence[Job], *, idempotency_ttl: float) -> list[EnqueueResult]:
        now = float(self._clock())
        results: list[EnqueueResult] = []
        with self._lock:
            self._check_room(jobs, now)
            for new in jobs:
                key = new.idempotency_key
                if key is not None:
                    remembered = self._idempotency.get(key)
                    if remembered is not None and remembered[1] > now:
                        existing = self._jobs.get(remembered[0])
                        if existing is not None:
                            results.append(EnqueueResult(existing.copy(), False))
                            continue
                job = accept_new(new, now)
                self._jobs[job.id] = job
                if key is not None:
                    self._idempotency[key] = (job.id, now + idempotency_ttl)
                self._schedule(job, now)
                self._emit("job_created", job, now, created_event_data(job.queue, job.type))
                results.append(EnqueueResult(job.copy(), True))
            self._notify()
        return results

    def _check_room(self, jobs: Sequence[Job], now: float) -> None:
        """Refuse the whole batch if it would take a limited queue past its maximum."""
        if not self._max_length:
            return
        adding: dict[str, int] = {}
        keys: set[str] = set()
        for job in jobs:
            key = job.idempotency_key
            if key is not None:
                remembered = self._idempotency.get(key)
                if key in keys or (
                    remembered is not None and remembered[1] > now and remembered[0] in self._jobs
                ):
                    continue  # an idempotency hit adds nothing
                keys.add(key)
            if job.queue in self._max_length:
                adding[job.queue] = adding.get(job.queue, 0) + 1
        for queue, count in adding.items():
            held = sum(
                1 for j in self._jobs.values() if j.queue == queue and j.status is JobStatus.PENDING
            )
            if held + count > self._max_length[queue]:
                raise QueueFullError(queue, QUEUE_FULL_RETRY_AFTER)

    # -- queue control ---------------------------------------------------------------
    async def configure_queue(self, queue: str, *, max_length: int | None) -> None:
        with self._lock:
            if max_length is None:
                self._max_length.pop(queue, None)
            else:
                self._max_length[queue] = max_length

    async def pause_queue(self, queue: str) -> None:
        with self._lock:
            self._paused.add(queue)

    async def resume_queue(self, queue: str) -> None:
        with self._lock:
            self._paused.discard(queue)
            self._notify()

    # -- consuming -------------------------------------------------------------------
    async def fetch(
        self, queues: Sequence[str], worker_id: str, limit: int, lease_seconds: float
    ) -> list[Job]:
        now = float(self._clock())
        out: list[Job] = []
        with self._lock:
            queues = [q for q in queues if q not in self._paused]
            wanted = set(queues)
            for job in list(self._running.values()):
                if len(out) >= limit:
                    break
                expires = job.lease_expires_at
                if job.queue not in wanted or expires is None or expires > now:
                    continue
                del self._running[job.id]
                if job.attempts > job.max_retries:
                    job.status = JobStatus.FAILED
                    job.error = lease_expired_error(job.attempts)
                    job.completed_at = now
                    job.lease_owner = job.lease_expires_at = None
                    self._emit("job_failed", job, now, {"error": job.error})
                    continue
                out.append(self._lease(job, worker_id, now, lease_seconds))
            for queue in queues:
                self._promote(queue, now)
            # Highest priority across the given queues first, then queue order.
            while len(out) < limit:
                best: tuple[tuple[int, int], str] | None = None
                for queue in queues:
                    ready = self._ready.get(queue)
                    while ready and self._entry.get(ready[0][2]) != ready[0][1]:
                        heapq.heappop(ready)
                    if ready and (best is None or ready[0][:2] < best[0]):
                        best = (ready[0][:2], queue)
                if best is None:
                    break
                popped = self._pop_ready(best[1])
                if popped is not None:
                    out.append(self._lease(popped, worker_id, now, lease_seconds))
        return out

    async def renew(
        self, worker_id: str, leases: Mapping[str, int], lease_seconds: float
    ) -> set[str]:
        now = float(self._clock())
        lost: set[str] = set()
        with self._lock:
            for job_id, attempt in leases.items():
                job = self._running.get(job_id)
                if job is None or job.lease_owner != worker_id or job.attempts != attempt:
                    lost.add(job_id)
                    continue
                job.lease_expires_at = now + lease_seconds
        return lost

    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        now = float(self._clock())
        accepted: list[bool] = []
        notify = False
        with self._lock:
            for outcome in outcomes:
                job = self._running.get(outcome.job_id)
                if (
                    job is None
                    or job.lease_owner != outcome.worker_id
                    or job.attempts != outcome.attempt
                ):
                    accepted.append(False)
                    continue
                del self._running[job.id]
                apply_outcome(job, outcome, now)
                if job.status is JobStatus.PENDING:
                    self._schedule(job, now)
                    notify = True
                self._emit(
                    EVENT_OF_OUTCOME[outcome.kind], job, now, outcome_event_data(outcome, job)
                )
                accepted.append(True)
            if notify:
                self._notify()
        return accepted

    async def set_progress(self, job_id: str, attempt: int, progress: int) -> bool:
        now = float(self._clock())
        with self._lock:
            job = self._running.get(job_id)
            if job is None or job.attempts != attempt:
                return False
            job.progress = progress
            self._emit("job_progress", job, now, {"progress": progress})
            return True

    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        event = asyncio.Event()
        with self._lock:
            now = float(self._clock())
            queues = [q for q in queues if q not in self._paused]
            due = [heap[0][0] for q in queues if (heap := self._delayed.get(q))]
            expiring = [
                j.lease_expires_at
                for j in self._running.values()
                if j.lease_expires_at is not None and j.queue in queues
            ]
            if any(self._ready.get(q) for q in queues):
                return
            soonest = min([*due, *expiring], default=now + timeout)
            timeout = max(0.0, min(timeout, soonest - now))
            self._waiters.add((loop, event))
        try:
            await asyncio.wait_for(event.wait(), timeout)
        except TimeoutError:
            pass
        finally:
            with self._lock:
                self._waiters.discard((loop, event))

    # -- records ---------------------------------------------------------------------
    async def get_job(self, job_id: str) -> Job | None:
        with self._lock:
            job = self._jobs.get(job_id)
            return None if job is None else job.copy()

    async def list_jobs(
        self, filter: JobFilter, *, limit: int, cursor: str | None = None
    ) -> JobPage:
        with self._lock:
            ids = sorted(self._jobs, reverse=True)
            items: list[Job] = []
            for job_id in ids:
                if cursor is not None and job_id >= cursor:
                    continue
                job = self._jobs[job_id]
                if filter.status is not None and job.status is not filter.status:
                    continue
                if filter.type is not None and job.type != filter.type:
                    continue
                if filter.queue is not None and job.queue != filter.queue:
                    continue
                items.append(job.copy())
                if len(items) > limit:
                    break
        for item in items:
            if item.status is JobStatus.COMPLETED:
                leave_out_large_result(item, len(dumps(item.result)))
        next_cursor = items[limit - 1].id if len(items) > limit else None
        return JobPage(items[:limit], next_cursor)

    async def cancel(self, job_id: str) -> Job:
        now = float(self._clock())
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            if job.status.finished:
                raise ConflictError(f"job {job_id} is already {job.status.value}")
            self._running.pop(job_id, None)
            self._entry.pop(job_id, None)
            job.status = JobStatus.CANCELLED
            job.completed_at = now
            job.lease_owner = job.lease_expires_at = None
            self._emit("job_cancelled", job, now)
            return job.copy()

    async def retry(self, job_id: str) -> Job:
        now = float(self._clock())
        with self._lock:
            job = self._jobs.get(job_id)
            if job is None:
                raise JobNotFoundError(job_id)
            reset_for_retry(job, now)
            self._schedule(job, now)
            self._emit("job_created", job, now, created_event_data(job.queue, job.type, retry=True))
            self._notify()
            return job.copy()

    async def purge(self) -> int:
        now = float(self._clock())
        result_ttl = self.retention.result_ttl
        removed = 0
        with self._lock:
            self._trim_events(now)
            for job_id, job in list(self._jobs.items()):
                if job.status.finished and (job.completed_at or 0) + result_ttl <= now:
                    del self._jobs[job_id]
                    removed += 1
            for key, (_, expires) in list(self._idempotency.items()):
                if expires <= now:
                    del self._idempotency[key]
        return removed

    async def queue_stats(self) -> list[QueueStats]:
        now = float(self._clock())
        counts: dict[str, dict[str, Any]] = {}
        with self._lock:
            for job in self._jobs.values():
                row = counts.setdefault(job.queue, {})
                key = job.status.value
                if job.status is JobStatus.PENDING and job.run_at > now:
                    key = "scheduled"
                row[key] = row.get(key, 0) + 1
            for queue in (*self._paused, *self._max_length):
                counts.setdefault(queue, {})
            for queue, row in counts.items():
                row["paused"] = queue in self._paused
                row["max_length"] = self._max_length.get(queue)
        return [QueueStats(name=name, **row) for name, row in sorted(counts.items())]

    # -- events ----------------------------------------------------------------------
    async def read_events(
        self, after: str | None, limit: int, *, allow_gap: bool = False
    ) -> list[Event]:
        start = parse_event_number(after)
        # Ids are zero-padded to 20 digits, so they compare as their numbers do.
        floor = None if start is None else f"{start:020d}"
        with self._lock:
            events = [e for e in self._events if floor is None or e.id > floor]
            trimmed = self._trimmed_through
        if start is not None and not allow_gap and trimmed and start < trimmed:
            lost = trimmed - start
            if events:
                raise HistoryTruncatedError(floor or "", events[0].id, events[0].at, lost)
            raise HistoryTruncatedError(floor or "", None, None, lost)
        return events[:limit]

    # -- leader lock -----------------------------------------------------------------
    async def acquire_lock(self, name: str, owner: str, ttl: float) -> int | None:
        now = float(self._clock())
        with self._lock:
            held = self._locks.get(name)
            if held is not None and held[0] != owner and held[1] > now:
                return None
            if held is not None and held[0] == owner and held[1] > now:
                token = held[2]
            else:
                token = (held[2] if held is not None else 0) + 1
            self._locks[name] = (owner, now + ttl, token)
            return token

    async def release_lock(self, name: str, owner: str) -> None:
        with self._lock:
            held = self._locks.get(name)
            if held is not None and held[0] == owner:
                # Keep the token so the next holder's is higher.
                self._locks[name] = ("", 0.0, held[2])
