"""Group commit: concurrent submits stored in one store call.

Submits that arrive within the same event-loop iteration, or while the previous round of
store calls is out, are stored together, one ``enqueue_jobs`` call per queue: one Redis
round trip, one SQLite transaction (one fsync) for all of them. Each caller still gets
its own answer:

* the results are the batch's, one per job, in order (a repeated idempotency key within
  a batch answers the later submits with the first one's job, ``created=False``, as if
  they had come one after another);
* a full queue refuses a whole batch atomically, storing nothing; its jobs are then
  stored one by one, in arrival order, so each submit is accepted or refused with
  ``QueueFullError`` exactly as it would have been alone;
* any other failure (the store is unavailable) is every caller's failure.

A caller cancelled before its batch leaves is left out of it.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Sequence
from typing import Any

from conveyor.app import Conveyor
from conveyor.backends.base import EnqueueResult
from conveyor.errors import QueueFullError
from conveyor.job import Job

#: Most jobs stored by one store call.
MAX_BATCH = 256

_Waiter = tuple[Job, "asyncio.Future[EnqueueResult]"]


class SubmitBatcher:
    """Stores jobs for concurrent submitters of one event loop in shared store calls."""

    def __init__(self, conveyor: Conveyor, max_batch: int = MAX_BATCH) -> None:
        self.conveyor = conveyor
        self.max_batch = max_batch
        # Per event loop (an app may be served from more than one, one after another).
        self._waiting: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, list[_Waiter]] = (
            weakref.WeakKeyDictionary()
        )
        self._flushes: set[asyncio.Task[None]] = set()
        # Loops with a round of store calls out: submits arriving meanwhile wait for it
        # to end and then leave together (group commit).
        self._busy: weakref.WeakSet[asyncio.AbstractEventLoop] = weakref.WeakSet()

    async def enqueue(self, job: Job) -> EnqueueResult:
        """Store ``job`` together with the others submitted meanwhile.

        Raises:
            QueueFullError, or whatever ``Conveyor.enqueue_jobs`` raises.
        """
        loop = asyncio.get_running_loop()
        future: asyncio.Future[EnqueueResult] = loop.create_future()
        waiting = self._waiting.get(loop)
        if waiting is None:
            waiting = self._waiting[loop] = []
            if loop not in self._busy:
                loop.call_soon(self._flush, loop)
        waiting.append((job, future))
        return await future

    def _flush(self, loop: asyncio.AbstractEventLoop) -> None:
        waiting = self._waiting.pop(loop, [])
        live = [(job, future) for job, future in waiting if not future.done()]
        if not live:
            return
        self._busy.add(loop)
        task = loop.create_task(self._round(live))
        self._flushes.add(task)

        def done(task: asyncio.Task[None]) -> None:
            self._flushes.discard(task)
            self._busy.discard(loop)
            if self._waiting.get(loop):  # arrived while this round was out: next round
                self._flush(loop)

        task.add_done_callback(done)

    async def _round(self, live: Sequence[_Waiter]) -> None:
        by_queue: dict[str, list[_Waiter]] = {}
        for waiter in live:
            by_queue.setdefault(waiter[0].queue, []).append(waiter)
        await asyncio.gather(
            *(
                self._store(group[start : start + self.max_batch])
                for group in by_queue.values()
                for start in range(0, len(group), self.max_batch)
            ),
            return_exceptions=True,
        )

    async def _store(self, batch: Sequence[_Waiter]) -> None:
        try:
            results = await self.conveyor.enqueue_jobs([job for job, _ in batch])
        except QueueFullError as exc:
            if len(batch) == 1:
                _fail(batch[0][1], exc)
                return
            # Nothing was stored: try each in arrival order, as if they came one by one.
            for waiter in batch:
                await self._store([waiter])
            return
        except BaseException as exc:  # handed to every caller
            for _, future in batch:
                _fail(future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        for (_, future), result in zip(batch, results, strict=True):
            if not future.done():
                future.set_result(result)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if future.done():
        return
    if isinstance(exc, asyncio.CancelledError):
        future.cancel()
    else:
        future.set_exception(exc)
