"""The scheduler service: one leader among any number of replicas fires due schedules.

Leadership
    Every replica tries to take the store's leader lock ``scheduler`` (ttl = the lease,
    ``CONVEYOR_LEASE_SECONDS``) every lease/3 seconds; the holder renews it at the same
    pace. A holder trusts its lock only until ``t_request_sent + ttl - margin`` on its
    monotonic clock (the store may have let the lock expire by then), so a leader that
    was paused (SIGSTOP, a long GC) stops firing before another one starts. That bound
    is not enough on its own — a process can stop between checking its lease and
    enqueueing — so every fire's job also carries the idempotency key
    ``schedule:{id}:{fire ms}``: two leaders at once enqueue each fire once.

Firing
    The leader loads every enabled schedule into a heap by next run, reloads when
    :meth:`~conveyor.backends.base.ScheduleStore.schedules_version` changes (polled every
    ``poll`` seconds, 0.5 by default, so API edits apply within a second), and sleeps
    until the next due time (not polling every second). Due-ness is judged by the store's
    clock (``Backend.now``; Redis ``TIME``), tracked as an offset from the local clock
    that is refreshed with every lock renewal, so replicas with skewed clocks agree.
    Due fires are enqueued in batches through :meth:`Conveyor.enqueue_jobs`, then
    recorded with one ``record_fires`` call.

Misfires and overlap
    Fires at most ``grace`` seconds late (default 2 × lease + 1 s: covers a handover)
    are caught up one job each. Older fires were missed: see
    :func:`~conveyor.scheduling.schedule.plan_fires` for ``run_once`` and ``skip``.
    ``overlap="skip"`` does not fire while the schedule's last job is pending or running.

Nothing stops the loop: a store error is logged and retried after a pause (the state is
reloaded from the store, so no fire is lost — at worst re-sent and deduplicated), and a
schedule that cannot be read or parsed is skipped and logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import heapq
import itertools
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from conveyor._outage import Outage
from conveyor.app import Conveyor
from conveyor.backends.base import (
    Backend,
    EnqueueResult,
    Fire,
    MisfirePolicy,
    OverlapPolicy,
    Schedule,
)
from conveyor.errors import ConveyorError, LostLeadershipError, QueueFullError, ValidationError
from conveyor.job import Job, JobStatus
from conveyor.leadership import LeaderLease
from conveyor.scheduling.declare import upsert_declared
from conveyor.scheduling.schedule import (
    Timing,
    build_job,
    fire_key,
    jittered,
    plan_fires,
    validate_schedule,
)

logger = logging.getLogger(__name__)

LOCK_NAME = "scheduler"
#: Enqueue calls one tick keeps in flight at once.
_PIPELINES = 4

#: Called for every job a fire stored or found: (schedule id, fire time, stored job, created).
FireHook = Callable[[str, float, Job, bool], None]


@dataclass
class SchedulerStats:
    """Counters of one scheduler replica."""

    fires: int = 0  # jobs this replica created
    duplicates: int = 0  # fires another leader had already enqueued (idempotency hits)
    skipped: int = 0  # fires not made: overlap, or a full queue
    missed: int = 0  # schedules that found fire times older than the grace period
    reloads: int = 0
    leaderships: int = 0
    errors: int = 0


@dataclass
class _Entry:
    schedule: Schedule
    timing: Timing
    next_run_at: float | None
    last_job_id: str | None
    seq: int = 0


@dataclass
class _Batch:
    jobs: list[Job] = field(default_factory=list)
    meta: list[tuple[_Entry, float]] = field(default_factory=list)  # (entry, fire time)


class Scheduler:
    """A scheduler replica. Run as many as you like; one leads at a time.

    Args:
        app: the application: its store, settings and declared schedules.
        lease: seconds of the leader lock; defaults to ``settings.lease_seconds``.
        owner: this replica's name in the lock (default ``host:pid:random``).
        grace: seconds a fire may be late and still fire on its own (default 2 × lease
            + 1 s).
        poll: seconds between checks of the schedules' version.
        batch_size: the most jobs enqueued per store call.
        on_fire: called for every fire's stored job (benchmarks, tests).
    """

    def __init__(
        self,
        app: Conveyor,
        *,
        lease: float | None = None,
        owner: str | None = None,
        grace: float | None = None,
        poll: float = 0.5,
        batch_size: int = 250,
        on_fire: FireHook | None = None,
    ) -> None:
        self.app = app
        self.lease = float(lease if lease is not None else app.settings.lease_seconds)
        self._lock = LeaderLease(LOCK_NAME, self.lease, owner=owner)
        self.owner = self._lock.owner
        self.grace = grace if grace is not None else 2 * self.lease + 1.0
        self.poll = poll
        self.batch_size = batch_size
        self.on_fire = on_fire
        self.stats = SchedulerStats()
        self._offset = 0.0  # store clock minus local clock
        self._entries: dict[str, _Entry] = {}
        self._heap: list[tuple[float, int, str]] = []
        self._seq = itertools.count()
        self._version: int | None = None
        self._next_poll = 0.0
        self._stopping = False
        self._wake: asyncio.Event | None = None
        self._recording: asyncio.Future[None] | None = None

    def __repr__(self) -> str:
        return f"<Scheduler {self.owner} leader={self.is_leader}>"

    # -- leadership ------------------------------------------------------------------
    @property
    def is_leader(self) -> bool:
        """True while this replica holds the lock and may fire."""
        return self._lock.held

    def store_now(self) -> float:
        """The store's clock, estimated locally (no round trip)."""
        return time.time() + self._offset

    async def acquire(self, backend: Backend | None = None) -> bool:
        """Take or renew the leader lock once; return whether this replica leads.

        The lease task calls this every lease/3 seconds; tests call it directly.
        """
        backend = backend or await self.app.backend()
        was_leader, token = self.is_leader, self._lock.token
        if not await self._lock.acquire(backend):
            return False
        before = time.time()
        store_time = await backend.now()
        self._offset = store_time - (before + time.time()) / 2
        if self._lock.token != token:
            self.stats.leaderships += 1
            self._forget()  # another leader may have fired meanwhile: start from the store
        if not was_leader:
            self._poke()
        return True

    async def _hold_lease(self, backend: Backend) -> None:
        outage = Outage(logger, f"scheduler {self.owner}: the leader lock")
        while not self._stopping:
            try:
                await self.acquire(backend)
            except ConveyorError as exc:  # the store is down: keep trying, lose trust on time
                self.stats.errors += 1
                outage.failed(exc)
            else:
                outage.succeeded()
            await self._sleep(self._lock.pause(), wakeable=False)
        self._poke()

    # -- the loop --------------------------------------------------------------------
    async def run(self) -> None:
        """Run until :meth:`stop`: upsert declared schedules, then lead or stand by."""
        self._stopping = False
        self._wake = asyncio.Event()
        backend = await self.app.backend()
        await self._upsert(backend)
        holder = asyncio.create_task(self._hold_lease(backend))
        try:
            while not self._stopping:
                if not self.is_leader:
                    await self._settle()
                    self._forget()
                    await self._sleep(self.lease)
                    continue
                try:
                    await self._step(backend)
                except Exception as exc:
                    self.stats.errors += 1
                    await self._settle()
                    self._forget()  # reload from the store: what was not recorded refires
                    if not isinstance(exc, LostLeadershipError):
                        logger.warning(
                            "scheduler %s: %s", self.owner, exc, exc_info=_unexpected(exc)
                        )
                    await self._sleep(min(1.0, self.lease / 3))
        finally:
            self._stopping = True
            await self._settle()
            holder.cancel()
            await asyncio.gather(holder, return_exceptions=True)
            if self._lock.token is not None:
                await self._lock.release(backend)  # else it expires on its own

    def stop(self) -> None:
        """Stop after the current step and hand the lock over at once."""
        self._stopping = True
        self._poke()

    async def _upsert(self, backend: Backend) -> None:
        while not self._stopping:
            try:
                written = await upsert_declared(self.app, backend)
            except Exception as exc:
                logger.warning("scheduler %s: storing declared schedules: %s", self.owner, exc)
                await self._sleep(1.0)
                continue
            if written:
                logger.info("stored %d schedule(s) declared in code", written)
            return

    async def _step(self, backend: Backend) -> None:
        if self._version is None or time.monotonic() >= self._next_poll:
            self._next_poll = time.monotonic() + self.poll
            version = await backend.schedules_version()
            if version != self._version:
                await self.flush()
                await self.reload(backend)
                self._version = version
        await self.fire_due(self.store_now(), backend, write_behind=True)
        delay = self._next_poll - time.monotonic()
        while self._heap:
            due, seq, schedule_id = self._heap[0]
            entry = self._entries.get(schedule_id)
            if entry is not None and entry.seq == seq:
                delay = min(delay, due - self.store_now())
                break
            heapq.heappop(self._heap)  # stale: the schedule changed or went away
        await self._sleep(max(0.0, delay))

    async def _settle(self) -> None:
        """Flush background records, logging (not raising) a failure: the fires they
        held are re-sent by whoever leads next, and deduplicated by their keys."""
        try:
            await self.flush()
        except Exception as exc:
            logger.warning("scheduler %s: recording fires: %s", self.owner, exc)

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    async def _sleep(self, seconds: float, *, wakeable: bool = True) -> None:
        if self._stopping and wakeable:
            return
        wake = self._wake
        if wake is None or not wakeable:
            await asyncio.sleep(seconds)
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(wake.wait(), seconds)
        wake.clear()

    # -- state -----------------------------------------------------------------------
    def _forget(self) -> None:
        self._entries.clear()
        self._heap.clear()
        self._version = None

    def _push(self, entry: _Entry) -> None:
        entry.seq = next(self._seq)
        if entry.next_run_at is not None:
            heapq.heappush(self._heap, (entry.next_run_at, entry.seq, entry.schedule.id))

    async def reload(self, backend: Backend) -> None:
        """Load every enabled schedule. A schedule whose definition did not change keeps
        this replica's run state (it is at least as recent as the store's)."""
        self.stats.reloads += 1
        stored = await backend.list_schedules()
        now = self.store_now()
        fresh: dict[str, _Entry] = {}
        for schedule in stored:
            if not schedule.enabled:
                continue
            known = self._entries.get(schedule.id)
            if known is not None and _same_definition(known.schedule, schedule):
                fresh[schedule.id] = known
                continue
            try:
                timing = validate_schedule(schedule)
                schedule.misfire_policy = MisfirePolicy(schedule.misfire_policy)
                schedule.overlap = OverlapPolicy(schedule.overlap)
            except (ValidationError, ValueError) as exc:
                logger.error("schedule %r cannot fire: %s; skipped", schedule.id, exc)
                continue
            next_run = schedule.next_run_at
            if next_run is None:
                next_run = timing.next_after(now)
            fresh[schedule.id] = _Entry(schedule, timing, next_run, schedule.last_job_id)
        self._entries = fresh
        self._heap = []
        for entry in fresh.values():
            self._push(entry)
        logger.debug("scheduler %s: %d schedules loaded", self.owner, len(fresh))

    # -- firing ----------------------------------------------------------------------
    async def fire_due(
        self, now: float, backend: Backend | None = None, *, write_behind: bool = False
    ) -> int:
        """Fire every schedule due at ``now`` (store time); return the jobs created.

        Args:
            now: the store's time.
            backend: the store (the app's, by default).
            write_behind: record the fires in the background, overlapping the next
                tick (the loop does; a crash before the record lands only means the next
                leader re-sends those fires, which their keys deduplicate).

        Raises:
            LostLeadershipError: the lease ran out before everything was enqueued.
        """
        due: list[_Entry] = []
        while self._heap and self._heap[0][0] <= now:
            _, seq, schedule_id = heapq.heappop(self._heap)
            entry = self._entries.get(schedule_id)
            if entry is not None and entry.seq == seq:
                due.append(entry)
        if not due:
            return 0
        backend = backend or await self.app.backend()
        busy = await self._still_running(backend, due)
        batch, fires = self._plan(due, now, busy)
        created = await self._enqueue(batch, fires)
        await self.flush()  # fires are recorded in order, one batch at a time
        recording = asyncio.ensure_future(backend.record_fires(fires))
        if write_behind:
            self._recording = recording
        else:
            await recording
        return created

    async def flush(self) -> None:
        """Wait for fires recorded in the background (see :meth:`fire_due`)."""
        recording, self._recording = self._recording, None
        if recording is not None:
            await recording

    def _plan(self, due: list[_Entry], now: float, busy: set[str]) -> tuple[_Batch, list[Fire]]:
        """The jobs of the due schedules, and the fires to record for those that make
        none; advances each schedule's next run."""
        batch = _Batch()
        fires: list[Fire] = []
        for entry in due:
            schedule = entry.schedule
            assert entry.next_run_at is not None
            plan = plan_fires(
                entry.timing,
                entry.next_run_at,
                now,
                grace=self.grace,
                misfire=schedule.misfire_policy,
                max_drift=schedule.max_drift,
            )
            if plan.missed:
                self.stats.missed += 1
                logger.warning(
                    "schedule %r missed fires since %s (misfire policy %s)",
                    schedule.id,
                    _iso(entry.next_run_at),
                    schedule.misfire_policy.value,
                )
            times = plan.times
            if times and schedule.id in busy:
                self.stats.skipped += len(times)
                times = []
            elif times and schedule.overlap is OverlapPolicy.SKIP:
                times = times[-1:]  # several catch-up jobs at once would overlap each other
            for fire_time in times:
                key = fire_key(schedule.id, fire_time)
                job = build_job(self.app, schedule, jittered(fire_time, schedule.jitter), key)
                batch.jobs.append(job)
                batch.meta.append((entry, fire_time))
            entry.next_run_at = plan.next_run_at
            self._push(entry)
            if not times:
                fires.append(Fire(schedule.id, now, plan.next_run_at, None))
        return batch, fires

    async def _still_running(self, backend: Backend, due: Sequence[_Entry]) -> set[str]:
        """Ids of ``overlap="skip"`` schedules whose last job is pending or running."""
        checks = [
            e for e in due if e.schedule.overlap is OverlapPolicy.SKIP and e.last_job_id is not None
        ]
        if not checks:
            return set()
        jobs = await asyncio.gather(*(backend.get_job(e.last_job_id or "") for e in checks))
        live = (JobStatus.PENDING, JobStatus.RUNNING)
        return {
            e.schedule.id for e, job in zip(checks, jobs, strict=True) if job and job.status in live
        }

    async def _enqueue(self, batch: _Batch, fires: list[Fire]) -> int:
        """Store the batch in chunks, a few at once: the client encodes one chunk while
        the store runs another."""
        size = self.batch_size
        chunks = [batch.jobs[i : i + size] for i in range(0, len(batch.jobs), size)]
        gate = asyncio.Semaphore(_PIPELINES)

        async def store(jobs: list[Job]) -> list[EnqueueResult | None]:
            async with gate:
                self._lock.check()  # the lease ran out while firing
                return await self._store(jobs)

        answers = await asyncio.gather(*(store(chunk) for chunk in chunks))
        created = 0
        last: dict[str, tuple[_Entry, float, str]] = {}
        results = [r for answer in answers for r in answer]
        for (entry, fire_time), result in zip(batch.meta, results, strict=True):
            if result is None:
                self.stats.skipped += 1
                continue
            if result.created:
                created += 1
            else:
                self.stats.duplicates += 1
            entry.last_job_id = result.job.id
            last[entry.schedule.id] = (entry, fire_time, result.job.id)
            if self.on_fire is not None:
                self.on_fire(entry.schedule.id, fire_time, result.job, result.created)
        self.stats.fires += created
        for schedule_id, (entry, fire_time, job_id) in last.items():
            fires.append(Fire(schedule_id, fire_time, entry.next_run_at, job_id))
        return created

    async def _store(self, jobs: list[Job]) -> list[EnqueueResult | None]:
        """Enqueue a batch; when a queue is full, job by job, leaving out refused ones."""
        try:
            return list(await self.app.enqueue_jobs(jobs))
        except QueueFullError:
            pass
        out: list[EnqueueResult | None] = []
        for job in jobs:
            try:
                (result,) = await self.app.enqueue_jobs([job])
            except QueueFullError as exc:
                logger.warning("schedule job %s not enqueued: %s", job.idempotency_key, exc)
                out.append(None)
            else:
                out.append(result)
        return out


def _same_definition(a: Schedule, b: Schedule) -> bool:
    """Equal but for the run state (``updated_at`` changes with every save)."""

    def blank(s: Schedule) -> Schedule:
        return dataclasses.replace(s, next_run_at=None, last_run_at=None, last_job_id=None)

    return blank(a) == blank(b)


def _unexpected(exc: BaseException) -> bool:
    """Whether a traceback helps: store outages are expected, bugs are not."""
    return not isinstance(exc, ConveyorError)


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
