"""Which queues live workers consume, as an API process sees it.

A job accepted onto a queue that no live worker consumes would wait silently; the API
says so in its log (once a minute per queue) and ``GET /api/v1/queues`` shows
``consumers: 0``. Submits never wait for this: the check runs beside them.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable

from conveyor.backends.base import Backend
from conveyor.errors import BackendError

logger = logging.getLogger(__name__)


class ConsumerWatch:
    """Counts of live workers per queue, read from the store's worker registry.

    Args:
        max_age: seconds a reading is trusted before a check reads the registry again.
        warn_every: the least seconds between two warnings about one queue.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        *,
        max_age: float = 1.0,
        warn_every: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_age = max_age
        self.warn_every = warn_every
        self._clock = clock
        self._counts: Counter[str] = Counter()
        self._read_at = float("-inf")
        self._warned: dict[str, float] = {}
        self._checking: dict[str, asyncio.Task[None]] = {}

    async def consumers(self, backend: Backend) -> Counter[str]:
        """Live workers per queue, read now.

        Raises:
            BackendError: the store failed.
        """
        counts: Counter[str] = Counter()
        for worker in await backend.list_workers():
            counts.update(set(worker.queues))
        self._counts, self._read_at = counts, self._clock()
        return counts

    def accepted(self, backend: Backend, queue: str) -> None:
        """Note a job accepted onto ``queue``; warn if nobody consumes it (from a
        reading at most ``max_age`` old, else after reading the registry beside)."""
        if self._clock() - self._read_at < self.max_age:
            if not self._counts[queue]:
                self._warn(queue)
            return
        if queue not in self._checking:
            task = asyncio.get_running_loop().create_task(self._check(backend, queue))
            self._checking[queue] = task
            task.add_done_callback(lambda _: self._checking.pop(queue, None))

    async def _check(self, backend: Backend, queue: str) -> None:
        try:
            counts = await self.consumers(backend)
        except BackendError as exc:  # the submit succeeded; this is advice only
            logger.debug("could not read the worker registry: %s", exc)
            return
        if not counts[queue]:
            self._warn(queue)

    def _warn(self, queue: str) -> None:
        now = self._clock()
        if now - self._warned.get(queue, float("-inf")) < self.warn_every:
            return
        self._warned[queue] = now
        logger.warning(
            "a job was accepted onto queue %r, which no live worker consumes: it waits "
            "until one does (conveyor worker APP --queues %s)",
            queue,
            queue,
        )
