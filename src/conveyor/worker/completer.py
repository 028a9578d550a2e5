"""Group commit of attempt outcomes.

Jobs that finish while a batch is being written wait for the next batch, so the store sees
one round trip per batch rather than per job, and a job counts as done only once its
outcome is stored.

What happens when a write fails depends on why:

- the store is unavailable (``BackendUnavailableError``, ``OSError``): nothing is dropped;
  the batch is written again, with capped backoff, until the store answers.
- the store refuses the write for good (any other ``ConveyorError``): the batch is written
  again one outcome at a time, so an outcome the store cannot take holds no other back;
  that outcome is replaced by a failure that says why (the job ends ``failed``).
- anything else is a bug: the completer stops, every waiting attempt and later submit gets
  an ``OutcomeStoreError``, and ``on_failure`` tells the worker, which stops too.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass

from conveyor._outage import Outage
from conveyor.backends.base import Backend, Outcome, OutcomeKind
from conveyor.errors import BackendUnavailableError, ConveyorError, OutcomeStoreError
from conveyor.job import task_error

logger = logging.getLogger(__name__)

#: Errors that say the store cannot be reached now, not that it refuses the write.
UNAVAILABLE = (BackendUnavailableError, OSError)
FIRST_RETRY_DELAY = 0.05
MAX_RETRY_DELAY = 2.0
#: Least seconds between two warnings about the same outage.
WARN_INTERVAL = 10.0

_Entry = tuple[Outcome, "asyncio.Future[bool]"]


@dataclass(slots=True)
class CompleterStats:
    """What went wrong writing outcomes, counted since the completer started."""

    store_failures: int = 0  # writes that failed because the store was unavailable
    unstorable: int = 0  # outcomes the store refused for good, stored as failures instead
    abandoned: int = 0  # outcomes never stored (shutdown deadline, or the completer failed)


class Completer:
    """Buffers outcomes and writes them in batches with ``Backend.complete``.

    Args:
        backend: the store.
        max_batch: the most outcomes one write carries.
        stats: where to count failures (a fresh one when omitted).
        on_failure: called once, on the loop, if the completer stops on an unexpected
            error; it can no longer store anything.
    """

    def __init__(
        self,
        backend: Backend,
        *,
        max_batch: int = 1000,
        stats: CompleterStats | None = None,
        on_failure: Callable[[OutcomeStoreError], None] | None = None,
    ) -> None:
        self._backend = backend
        self._max_batch = max_batch
        self._pending: list[_Entry] = []
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()  # set while nothing waits to be written
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # see Worker._loop
        self._on_failure = on_failure
        self._failure: str | None = None
        self._delay = FIRST_RETRY_DELAY
        self._outage = Outage(logger, "storing outcomes", every=WARN_INTERVAL)
        self.stats = stats or CompleterStats()
        self.rejected = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._flush_forever(), name="conveyor-completer")
        self._task.add_done_callback(self._on_done)

    async def submit(self, outcome: Outcome) -> bool:
        """Queue an outcome; return once it is stored (False: the fence refused it).

        Cancelling the caller does not withdraw the outcome: it is stored all the same.

        Raises:
            OutcomeStoreError: the completer has stopped on an error (or was closed) and
                the outcome will not be stored.
        """
        assert self._loop is not None, "start() first"
        if self._failure is not None:
            raise OutcomeStoreError(self._failure)
        future: asyncio.Future[bool] = self._loop.create_future()
        self._pending.append((outcome, future))
        self._idle.clear()
        self._wake.set()
        # No shield needed: a cancelled caller cancels only its own future, which the
        # flush skips. (A shield costs a second future and two callbacks per job.)
        return await future

    async def aclose(self, timeout: float | None = None) -> int:
        """Write what is buffered, then stop.

        Args:
            timeout: seconds to wait for the store; ``None`` waits as long as it takes.

        Returns:
            How many outcomes were not stored in time. They are abandoned (a WARNING
            says how many): their jobs are handed out again once their leases expire.
        """
        task, self._task = self._task, None
        if task is None:
            return 0
        if not task.done():
            idle = asyncio.ensure_future(self._idle.wait())
            await asyncio.wait({idle, task}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            idle.cancel()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        if self._failure is None:
            self._failure = "the completer is closed"
        abandoned = self._abandon()
        if abandoned:
            logger.warning(
                "%d outcomes could not be stored before shutdown; their jobs run again "
                "once their leases expire",
                abandoned,
            )
        return abandoned

    def _on_done(self, task: asyncio.Task[None]) -> None:
        if task.cancelled() or (exc := task.exception()) is None:
            return
        self._failure = f"storing outcomes failed: {exc!r}"
        abandoned = self._abandon()
        logger.error("%s; %d outcomes not stored", self._failure, abandoned, exc_info=exc)
        if self._on_failure is not None:
            error = OutcomeStoreError(self._failure)
            error.__cause__ = exc
            self._on_failure(error)

    def _abandon(self) -> int:
        """Give up on every buffered outcome; tell the attempts still waiting."""
        pending, self._pending = self._pending, []
        self._idle.set()
        for _, future in pending:
            if not future.done():
                future.set_exception(OutcomeStoreError(self._failure or "not stored"))
        self.stats.abandoned += len(pending)
        return len(pending)

    async def _flush_forever(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                await self._flush(self._pending[: self._max_batch])

    async def _flush(self, batch: list[_Entry]) -> None:
        try:
            await self._write(batch)
        except UNAVAILABLE as exc:
            # Never drop an outcome: the job stays leased to us and is retried here until
            # the store answers (or the lease expires and the job goes elsewhere).
            self.stats.store_failures += 1
            self._outage.failed(exc, retry_in=self._delay)
            await asyncio.sleep(self._delay)
            self._delay = min(self._delay * 2, MAX_RETRY_DELAY)
            return
        self._delay = FIRST_RETRY_DELAY
        self._outage.succeeded()

    async def _write(self, batch: list[_Entry]) -> None:
        outcomes = [outcome for outcome, _ in batch]
        try:
            flags = await self._backend.complete(outcomes)
        except UNAVAILABLE:
            raise
        except ConveyorError as exc:
            if len(batch) > 1:
                logger.warning(
                    "the store refused %d outcomes (%s); writing them one at a time",
                    len(batch),
                    exc,
                )
                for entry in batch:
                    await self._write([entry])
                return
            flags = [await self._write_refused(outcomes[0], exc)]
        self._settle(batch, flags)

    async def _write_refused(self, outcome: Outcome, exc: ConveyorError) -> bool:
        """Write, in place of an outcome the store refuses for good, a failure saying so.

        If the store refuses that too, it can store nothing: the error ends the completer.
        """
        logger.error(
            "the store refused the outcome of job %s attempt %d (%s); failing the job",
            outcome.job_id,
            outcome.attempt,
            exc,
        )
        error = task_error(
            f"the attempt's outcome ({outcome.kind}) could not be stored: {exc}",
            reason="outcome_not_stored",
            retryable=False,
        )
        failure = Outcome(
            outcome.job_id, outcome.worker_id, outcome.attempt, OutcomeKind.FAILED, error=error
        )
        (accepted,) = await self._backend.complete([failure])
        self.stats.unstorable += 1
        return accepted

    def _settle(self, batch: list[_Entry], flags: list[bool]) -> None:
        """Answer the attempts of a written batch (the oldest buffered outcomes)."""
        answers = list(zip(batch, flags, strict=True))
        del self._pending[: len(batch)]
        if not self._pending:
            self._idle.set()
        for (outcome, future), accepted in answers:
            if not accepted:
                self.rejected += 1
                logger.info(
                    "outcome of job %s attempt %d refused: lease lost",
                    outcome.job_id,
                    outcome.attempt,
                )
            if not future.done():
                future.set_result(accepted)
