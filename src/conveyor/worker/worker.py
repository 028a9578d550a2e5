"""The worker: a fetch loop feeding concurrent attempts, with leases kept alive.

One loop fetches as many jobs as there are free slots (never more, so nothing waits
leased in a local buffer), each job runs as its own asyncio task, outcomes are written in
group commits, and a heartbeat thread renews the leases of everything running.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor._aio import first_of
from conveyor._outage import Outage
from conveyor.app import Conveyor
from conveyor.backends.base import Backend, Outcome, OutcomeKind, WorkerInfo
from conveyor.backoff import retry_delay
from conveyor.context import JobContext, set_current
from conveyor.errors import (
    ConveyorError,
    NonRetryableError,
    OutcomeStoreError,
    ResultTooLargeError,
    Retry,
    SerializationError,
)
from conveyor.job import Job, task_error
from conveyor.task import Task
from conveyor.worker.completer import Completer, CompleterStats
from conveyor.worker.executors import Executors
from conveyor.worker.heartbeat import Heartbeat
from conveyor.worker.process_pool import ChildDiedError, ChildError

logger = logging.getLogger(__name__)

#: Longest pause between fetches while the store fails. It bounds how long a worker
#: stays idle after the store comes back (each failed call already spends ~0.7 s in the
#: driver's own reconnect retries, so this costs the store little).
FETCH_RETRY_MAX = 1.0
#: Seconds past the grace period that a stopping worker gives the store to take the last
#: outcomes, stop the heartbeat and unregister; whatever is not done by then is left
#: (outcomes not stored run again once their leases expire).
SHUTDOWN_SLACK = 3.0


@dataclass(slots=True)
class WorkerStats:
    """Counts since the worker started."""

    started: int = 0
    completed: int = 0
    retried: int = 0
    failed: int = 0
    released: int = 0
    stale_acks: int = 0
    outcomes: CompleterStats = field(default_factory=CompleterStats)


class Worker:
    """Runs jobs from the given queues until stopped.

    Args:
        app: the application whose tasks and store to use.
        queues: the queues to consume, highest-priority job first across them
            (default: every queue the app declares, :meth:`Conveyor.declared_queues`).
        concurrency: the most attempts running at once.
        processes: the most process-mode tasks running at once (defaults to CPU count).
        lease_seconds: lease length; defaults to ``CONVEYOR_LEASE_SECONDS``.
        shutdown_grace: seconds :meth:`run` waits for running jobs when stopping.
        worker_id: unique id in the store; generated when omitted.
    """

    def __init__(
        self,
        app: Conveyor,
        *,
        queues: Sequence[str] | None = None,
        concurrency: int = 100,
        processes: int | None = None,
        lease_seconds: float | None = None,
        shutdown_grace: float | None = None,
        worker_id: str | None = None,
    ) -> None:
        if concurrency < 1:
            raise ConveyorError("concurrency must be at least 1")
        if queues is None:
            queues = app.declared_queues()
        if not queues:
            raise ConveyorError("a worker needs at least one queue")
        self.app = app
        self.queues = list(dict.fromkeys(queues))
        self.concurrency = concurrency
        self.lease_seconds = lease_seconds or app.settings.lease_seconds
        self.shutdown_grace = (
            app.settings.shutdown_grace_seconds if shutdown_grace is None else shutdown_grace
        )
        self.id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.stats = WorkerStats()
        self._executors = Executors(
            threads=concurrency,
            processes=processes or os.cpu_count() or 1,
            app_spec=app.spec,
            max_result_bytes=app.settings.max_result_bytes,
        )
        self._running: dict[str, tuple[asyncio.Task[None], int]] = {}
        self._leases: dict[str, int] = {}
        # Attempts that have ended, whose outcome the completer holds or has stored.
        self._outcome_sent: dict[str, int] = {}
        # Why the worker cancelled an attempt: "lost" (cancelled in the store or lease
        # taken over) or "shutdown" (grace period over).
        self._cancel_reasons: dict[str, str] = {}
        self._slot_free = asyncio.Event()
        self._stopping = asyncio.Event()
        self._force = asyncio.Event()
        self._deadline = 0.0  # time.monotonic() by which a stopping worker has drained
        self._store_error: OutcomeStoreError | None = None
        self._backend: Backend | None = None
        self._completer: Completer | None = None
        # Taken once: asyncio.get_running_loop() is a getpid() system call on Linux, and
        # the hot path would make several per job.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._host = socket.gethostname()
        self._started_at = 0.0

    def __repr__(self) -> str:
        return f"<Worker {self.id} queues={self.queues} concurrency={self.concurrency}>"

    @property
    def in_flight(self) -> int:
        """Attempts running now."""
        return len(self._running)

    def info(self) -> WorkerInfo:
        """This worker as the registry shows it (called from the heartbeat thread too)."""
        return WorkerInfo(
            id=self.id,
            host=self._host,
            pid=os.getpid(),
            queues=tuple(self.queues),
            concurrency=self.concurrency,
            in_flight=len(self._running),
            started_at=self._started_at,
            last_heartbeat=time.time(),
        )

    def stop(self, *, force: bool = False) -> None:
        """Ask :meth:`run` to stop fetching and drain running jobs.

        Args:
            force: do not wait for the grace period; return running jobs at once.
        """
        if not self._stopping.is_set():
            self._deadline = time.monotonic() + self.shutdown_grace
        self._stopping.set()
        self._slot_free.set()
        if force:
            self._force.set()

    # -- main loop -------------------------------------------------------------------
    async def run(self) -> None:
        """Fetch and run jobs until :meth:`stop` is called, then drain.

        Running jobs get ``shutdown_grace`` seconds to finish; the rest are cancelled and
        returned to their queue without counting an attempt. The whole stop takes at most
        ``shutdown_grace + SHUTDOWN_SLACK`` seconds, even with the store down.

        Raises:
            OutcomeStoreError: outcomes could not be stored (the cause is chained and
                logged); the worker stopped at once and its jobs run again elsewhere.
        """
        backend = self._backend = await self.app.backend()
        self._loop = asyncio.get_running_loop()
        self._started_at = time.time()
        await self.app.configure_queues()
        completer = self._completer = Completer(
            backend, stats=self.stats.outcomes, on_failure=self._on_completer_failure
        )
        completer.start()
        heartbeat = Heartbeat(
            self.app,
            worker_id=self.id,
            lease_seconds=self.lease_seconds,
            interval=min(self.lease_seconds / 3, 1.0),
            snapshot=lambda: self._leases,
            on_lost=self._on_lost,
            announce=self.info,
        )
        await heartbeat.register(backend)  # listed at once, not only after the first beat
        heartbeat.start()
        helpers = [
            asyncio.create_task(self._watch_loop_lag(), name="conveyor-loop-lag"),
        ]
        logger.info(
            "worker %s consuming %s (concurrency %d)", self.id, self.queues, self.concurrency
        )
        try:
            await self._fetch_until_stopped(backend)
        finally:
            self.stop()  # sets the drain deadline, also when the fetch loop failed
            await self._drain()
            for helper in helpers:
                helper.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)
            await self._leave(backend, completer, heartbeat)
        if self._store_error is not None:
            raise self._store_error

    async def _leave(self, backend: Backend, completer: Completer, heartbeat: Heartbeat) -> None:
        """Store the last outcomes, stop the heartbeat and unregister, all within
        SHUTDOWN_SLACK seconds past the drain deadline."""
        end = max(self._deadline, time.monotonic()) + SHUTDOWN_SLACK

        def left() -> float:
            return max(end - time.monotonic(), 0.1)

        await completer.aclose(left())
        await asyncio.to_thread(heartbeat.stop, left())
        try:
            async with asyncio.timeout(left()):
                await backend.unregister_worker(self.id)
        except (ConveyorError, OSError) as exc:  # it expires from the registry instead
            logger.warning("could not unregister worker %s: %s", self.id, str(exc) or "timed out")
        await self._executors.aclose()
        self.stats.stale_acks = completer.rejected
        logger.info("worker %s stopped: %s", self.id, self.stats)

    def _on_completer_failure(self, error: OutcomeStoreError) -> None:
        """Outcomes can no longer be stored: stop at once and fail ``run``.

        Running attempts are cancelled and their leases no longer renewed, so the store
        hands their jobs to other workers once the leases expire.
        """
        logger.error("worker %s stopping: %s", self.id, error)
        self._store_error = error
        self.stop(force=True)

    async def _fetch_until_stopped(self, backend: Backend) -> None:
        """Run the fetch loop until :meth:`stop`. A fetch the store leaves hanging is
        given up at the drain deadline (what it leased comes back when its leases expire)."""
        fetching = asyncio.create_task(self._fetch_loop(backend), name="conveyor-fetch")
        try:
            await first_of(fetching, self._stopping.wait())
            if not fetching.done():
                await asyncio.wait({fetching}, timeout=max(self._deadline - time.monotonic(), 0))
        finally:
            if not fetching.done():
                fetching.cancel()
                await asyncio.wait({fetching})
        if not fetching.cancelled() and (exc := fetching.exception()) is not None:
            raise exc

    async def _fetch_loop(self, backend: Backend) -> None:
        stop_wait = asyncio.create_task(self._stopping.wait())
        error_delay = 0.05
        fetching = Outage(logger, "fetch")
        try:
            while not self._stopping.is_set():
                free = self.concurrency - len(self._running)
                if free <= 0:
                    self._slot_free.clear()
                    await self._slot_free.wait()
                    continue
                try:
                    asked = time.monotonic()
                    jobs = await backend.fetch(self.queues, self.id, free, self.lease_seconds)
                    if jobs and time.monotonic() - asked > self.lease_seconds / 2:
                        jobs = await self._still_ours(backend, jobs)
                    if not jobs:
                        # A wait that fails backs off like a fetch that fails: a store
                        # that answers fetches but not waits must not be polled flat out.
                        await first_of(backend.wait_for_work(self.queues, timeout=1.0), stop_wait)
                except (ConveyorError, OSError) as exc:
                    fetching.failed(exc, retry_in=error_delay)
                    await first_of(asyncio.sleep(error_delay), stop_wait)
                    error_delay = min(error_delay * 2, FETCH_RETRY_MAX)
                    continue
                fetching.succeeded()
                error_delay = 0.05
                for job in jobs:
                    self._start(job)
        finally:
            stop_wait.cancel()

    async def _still_ours(self, backend: Backend, jobs: list[Job]) -> list[Job]:
        """The jobs of a slow fetch whose leases still hold, renewed.

        The store may have granted the leases long before the answer arrived (it froze,
        or the network did, in between): some may have run out and gone to another
        worker already. Renewing first keeps this worker from starting those too.
        """
        leases = {j.id: j.attempts for j in jobs}
        try:
            lost = await backend.renew(self.id, leases, self.lease_seconds)
        except (ConveyorError, OSError):
            return jobs  # cannot tell: run them; the heartbeat and the fence will judge
        if lost:
            logger.info("%d fetched jobs were leased elsewhere before they arrived", len(lost))
        return [j for j in jobs if j.id not in lost]

    def _start(self, job: Job) -> None:
        self.stats.started += 1
        self._leases[job.id] = job.attempts
        assert self._loop is not None
        task = self._loop.create_task(self._attempt(job), name=f"conveyor-job-{job.id}")
        self._running[job.id] = (task, job.attempts)

    def _on_lost(self, attempts: dict[str, int]) -> None:
        """The store says these attempts are no longer ours (cancelled or taken over).

        A job may have been leased to this worker again since (its lease ran out while
        the last attempt's outcome waited for the store): that newer attempt stays.
        """
        for job_id, attempt in attempts.items():
            if self._outcome_sent.get(job_id) == attempt:
                # The attempt is over and its outcome is with the completer: most often
                # stored already (the store then no longer counts the job as running),
                # else fenced when it arrives. There is nothing left to stop.
                continue
            entry = self._running.get(job_id)
            if entry is not None and entry[1] == attempt and job_id not in self._cancel_reasons:
                logger.info("stopping job %s: cancelled or lease lost", job_id)
                self._cancel_reasons[job_id] = "lost"
                entry[0].cancel()

    async def _drain(self) -> None:
        if not self._running:
            return
        logger.info(
            "draining %d running jobs (grace %.1fs)", len(self._running), self.shutdown_grace
        )
        tasks = {task: job_id for job_id, (task, _) in self._running.items()}
        timeout = max(self._deadline - time.monotonic(), 0.0)
        await first_of(asyncio.wait(tasks, timeout=timeout), self._force.wait())
        still_running = [task for task in tasks if not task.done()]
        for task in still_running:
            self._cancel_reasons.setdefault(tasks[task], "shutdown")
            task.cancel()
        if still_running:
            await asyncio.wait(still_running)

    # -- one attempt -----------------------------------------------------------------
    async def _attempt(self, job: Job) -> None:
        try:
            outcome = await self._execute(job)
            if outcome is not None:
                assert self._completer is not None
                self._outcome_sent[job.id] = job.attempts
                if not await self._completer.submit(outcome):
                    self.stats.stale_acks += 1
        except OutcomeStoreError:
            pass  # the worker is stopping (see _on_completer_failure): the lease runs out
        finally:
            # Only this attempt's bookkeeping: the job may be running here again already,
            # as a newer attempt (see _on_lost).
            entry = self._running.get(job.id)
            if entry is not None and entry[1] == job.attempts:
                del self._running[job.id]
                self._leases.pop(job.id, None)
                self._cancel_reasons.pop(job.id, None)
            if self._outcome_sent.get(job.id) == job.attempts:
                del self._outcome_sent[job.id]
            self._slot_free.set()

    async def _execute(self, job: Job) -> Outcome | None:
        task = self.app.tasks.get(job.type)
        if task is None:
            error = task_error(
                f"unknown task type {job.type!r} on worker {self.id}",
                reason="unknown_task",
                retryable=False,
            )
            return self._outcome(job, OutcomeKind.FAILED, error=error)
        backend, loop = self._backend, self._loop
        assert backend is not None
        assert loop is not None
        set_current(JobContext(job, backend.set_progress, loop))
        timed_out = False
        try:
            # The result comes back encoded (and measured against the limit) once: the
            # store keeps those bytes.
            if job.timeout is None:  # no timer: entering one costs about 2 µs per job
                result, encoded = await self._executors.run(task, job)
            else:
                async with asyncio.timeout(job.timeout) as scope:
                    try:
                        result, encoded = await self._executors.run(task, job)
                    finally:
                        timed_out = scope.expired()
        except asyncio.CancelledError:
            reason = self._cancel_reasons.get(job.id)
            if reason is None:
                raise
            current = asyncio.current_task()
            if current is not None:
                current.uncancel()
            if reason == "shutdown":
                self.stats.released += 1
                return self._outcome(job, OutcomeKind.RELEASED)
            return None  # lost: the store no longer counts this attempt as ours
        except TimeoutError as exc:
            if timed_out:
                return self._failure(
                    task, job, exc, reason="timeout", message=f"timed out after {job.timeout}s"
                )
            return self._failure(task, job, exc)
        except Retry as exc:
            return self._failure(task, job, exc, reason="retry_requested", delay=exc.delay)
        except ResultTooLargeError as exc:
            return self._failure(task, job, exc, reason="result_too_large", retryable=False)
        except SerializationError as exc:
            return self._failure(task, job, exc, reason="serialization", retryable=False)
        except ChildDiedError as exc:
            return self._failure(task, job, exc, reason="process_died")
        except ChildError as exc:
            return self._failure(
                task,
                job,
                exc,
                reason=exc.reason,
                retryable=exc.retryable,
                exception_type=exc.exception_type,
            )
        except Exception as exc:
            return self._failure(task, job, exc)
        finally:
            set_current(None)
        self.stats.completed += 1
        return self._outcome(job, OutcomeKind.COMPLETED, result=result, result_json=encoded)

    def _failure(
        self,
        task: Task[Any, Any],
        job: Job,
        exc: BaseException,
        *,
        reason: str = "exception",
        message: str | None = None,
        retryable: bool | None = None,
        delay: float | None = None,
        exception_type: str | None = None,
    ) -> Outcome:
        if retryable is None:
            retryable = not isinstance(exc, (NonRetryableError, *task.options_.non_retryable))
        exception_type = exception_type or f"{type(exc).__module__}.{type(exc).__qualname__}"
        text = message or str(exc) or type(exc).__name__
        if retryable and job.attempts <= job.max_retries:
            if delay is None:
                opts = task.options_
                delay = retry_delay(job.attempts, opts.backoff, opts.backoff_max)
            error = task_error(text, reason=reason, retryable=True, exception_type=exception_type)
            self.stats.retried += 1
            logger.info(
                "job %s attempt %d failed (%s); retry in %.2fs", job.id, job.attempts, text, delay
            )
            return self._outcome(job, OutcomeKind.RETRY, error=error, retry_at=time.time() + delay)
        if retryable:
            reason = (
                f"{reason}; retries exhausted" if reason != "exception" else "retries_exhausted"
            )
        error = task_error(text, reason=reason, retryable=False, exception_type=exception_type)
        self.stats.failed += 1
        logger.warning("job %s failed after %d attempts: %s", job.id, job.attempts, text)
        return self._outcome(job, OutcomeKind.FAILED, error=error)

    def _outcome(
        self,
        job: Job,
        kind: OutcomeKind,
        *,
        result: Any = None,
        result_json: bytes | None = None,
        error: dict[str, Any] | None = None,
        retry_at: float | None = None,
    ) -> Outcome:
        return Outcome(job.id, self.id, job.attempts, kind, result, error, retry_at, result_json)

    # -- upkeep ----------------------------------------------------------------------
    async def _watch_loop_lag(self) -> None:
        interval = 0.25
        limit = self.lease_seconds / 2
        while True:
            before = time.monotonic()
            await asyncio.sleep(interval)
            lag = time.monotonic() - before - interval
            if lag > limit:
                logger.warning(
                    "event loop was blocked for %.1fs (> lease/2): a task is blocking the "
                    "loop; run blocking code with mode='thread' or mode='process'",
                    lag,
                )
