"""Completions per minute, per queue, counted by the API process from the event feed.

The first request after the API starts reads the feed's retained history (bounded time
per request, so a large feed is caught up over a few requests); after that each request
reads only the events since the last one. Counts are per second of the store's clock,
kept for the trailing minute only.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque

from conveyor.backends.base import Backend

#: The window the rate is counted over, in seconds.
WINDOW_SECONDS = 60


class CompletionRate:
    """``job_completed`` events per queue over the trailing minute.

    Args:
        page_size: events per read.
        budget: the most seconds one call spends catching up with the feed.
    """

    def __init__(self, *, page_size: int = 5000, budget: float = 0.25) -> None:
        self.page_size = page_size
        self.budget = budget
        self._cursor: str | None = None
        self._buckets: dict[str, deque[list[int]]] = {}  # queue -> [second, count], oldest first
        self._lock = asyncio.Lock()

    async def per_minute(self, backend: Backend) -> dict[str, int]:
        """Completions in the last minute, by queue (queues with none are left out).

        Raises:
            BackendError: the store failed.
        """
        async with self._lock:
            await self._catch_up(backend)
            horizon = int(await backend.now()) - WINDOW_SECONDS
            out: dict[str, int] = {}
            for queue, buckets in list(self._buckets.items()):
                while buckets and buckets[0][0] <= horizon:
                    buckets.popleft()
                if not buckets:
                    del self._buckets[queue]
                    continue
                out[queue] = sum(count for _, count in buckets)
            return out

    async def _catch_up(self, backend: Backend) -> None:
        deadline = time.monotonic() + self.budget
        while True:
            # Rates look at the last minute only: trimmed history does not matter here.
            events = await backend.read_events(self._cursor, self.page_size, allow_gap=True)
            for event in events:
                if event.type != "job_completed":
                    continue
                queue = event.data.get("queue")
                if isinstance(queue, str):
                    self._count(queue, int(event.at))
            if events:
                self._cursor = events[-1].id
            if len(events) < self.page_size or time.monotonic() > deadline:
                return

    def _count(self, queue: str, second: int) -> None:
        buckets = self._buckets.setdefault(queue, deque())
        if buckets and buckets[-1][0] == second:
            buckets[-1][1] += 1
        elif not buckets or buckets[-1][0] < second:
            buckets.append([second, 1])
        else:  # out of order (clock skew across queues on a cluster): find its second
            for bucket in reversed(buckets):
                if bucket[0] == second:
                    bucket[1] += 1
                    return
            buckets.append([second, 1])
            self._buckets[queue] = deque(sorted(buckets))
