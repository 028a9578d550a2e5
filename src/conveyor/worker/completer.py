"""Group commit of attempt outcomes.

Jobs that finish while a batch is being written wait for the next batch, so the store sees
one round trip per batch rather than per job, and a job counts as done only once its
outcome is stored.
"""

from __future__ import annotations

import asyncio
import logging

from conveyor.backends.base import Backend, Outcome
from conveyor.errors import ConveyorError

logger = logging.getLogger(__name__)


class Completer:
    """Buffers outcomes and writes them in batches with ``Backend.complete``.

    Args:
        backend: the store.
        max_batch: the most outcomes one write carries.
    """

    def __init__(self, backend: Backend, *, max_batch: int = 1000) -> None:
        self._backend = backend
        self._max_batch = max_batch
        self._pending: list[tuple[Outcome, asyncio.Future[bool]]] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None  # see Worker._loop
        self.rejected = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._task = self._loop.create_task(self._flush_forever(), name="conveyor-completer")

    async def submit(self, outcome: Outcome) -> bool:
        """Queue an outcome; return once it is stored (False: the fence refused it).

        Cancelling the caller does not withdraw the outcome: it is stored all the same.
        """
        assert self._loop is not None, "start() first"
        future: asyncio.Future[bool] = self._loop.create_future()
        self._pending.append((outcome, future))
        self._wake.set()
        # No shield needed: a cancelled caller cancels only its own future, which the
        # flush skips. (A shield costs a second future and two callbacks per job.)
        return await future

    async def aclose(self) -> None:
        """Write what is buffered, then stop."""
        if self._task is None:
            return
        while self._pending:
            self._wake.set()
            await asyncio.sleep(0.001)
        self._task.cancel()
        await asyncio.gather(self._task, return_exceptions=True)
        self._task = None

    async def _flush_forever(self) -> None:
        delay = 0.05
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._pending:
                batch = self._pending[: self._max_batch]
                try:
                    flags = await self._backend.complete([outcome for outcome, _ in batch])
                except (ConveyorError, OSError) as exc:
                    # Never drop an outcome: the job stays leased to us and is retried
                    # here until the store answers (or the lease expires elsewhere).
                    logger.warning("storing %d outcomes failed (%s); retrying", len(batch), exc)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 2.0)
                    continue
                delay = 0.05
                del self._pending[: len(batch)]
                for (outcome, future), accepted in zip(batch, flags, strict=True):
                    if not accepted:
                        self.rejected += 1
                        logger.info(
                            "outcome of job %s attempt %d refused: lease lost",
                            outcome.job_id,
                            outcome.attempt,
                        )
                    if not future.done():
                        future.set_result(accepted)
