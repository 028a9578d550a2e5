"""One reader's view of the event feed: a filter and a bounded buffer."""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from enum import StrEnum
from typing import TYPE_CHECKING

from conveyor.api.events.render import Published

if TYPE_CHECKING:
    from conveyor.backends.base import Event


class CloseReason(StrEnum):
    """Why a subscription ended."""

    CLOSED = "closed"  # its reader is done (client gone, or finished normally)
    SLOW = "slow"  # its buffer overflowed: the reader fell behind the feed
    SHUTDOWN = "shutdown"  # the server is stopping


class SubscriptionClosed(Exception):
    """The subscription ended; ``reason`` says why."""

    def __init__(self, reason: CloseReason) -> None:
        super().__init__(reason.value)
        self.reason = reason


class Subscription:
    """Events the hub hands one reader, filtered, in feed order.

    The hub never waits for a reader: :meth:`offer` appends or, when the buffer is full,
    ends the subscription as :attr:`CloseReason.SLOW` and frees the buffer. The reader
    drains the buffer a batch at a time with :meth:`next`.

    Args:
        start: the hub's cursor when the subscription was made. Live events are exactly
            the feed's events after it; a resuming reader replays up to it from the store.
        job_ids: only these jobs' events (a live set: add and remove as you go); ``None``
            for every job.
        types: only these event types; ``None`` for all.
        maxsize: how many undelivered events may wait before the reader is dropped.
        on_close: told once when the subscription ends, for any reason.
    """

    __slots__ = (
        "_buffer",
        "_on_close",
        "_reason",
        "_wakeup",
        "_woken",
        "job_ids",
        "maxsize",
        "start",
        "types",
    )

    def __init__(
        self,
        *,
        start: str | None,
        job_ids: set[str] | None,
        types: frozenset[str] | None,
        maxsize: int,
        on_close: Callable[[Subscription], None],
    ) -> None:
        self.start = start
        self.job_ids = job_ids
        self.types = types
        self.maxsize = maxsize
        self._on_close: Callable[[Subscription], None] | None = on_close
        self._buffer: deque[Published] = deque()
        self._wakeup = asyncio.Event()
        self._woken = False
        self._reason: CloseReason | None = None

    @property
    def closed(self) -> bool:
        """Whether the subscription has ended."""
        return self._reason is not None

    def wants(self, event: Event | Published) -> bool:
        """Whether ``event`` passes this subscription's filters."""
        return (self.types is None or event.type in self.types) and (
            self.job_ids is None or event.job_id in self.job_ids
        )

    def offer(self, item: Published) -> None:
        """Buffer ``item`` (the hub calls this); drop the subscription if it is full."""
        if self._reason is not None:
            return
        if len(self._buffer) >= self.maxsize:
            self.close(CloseReason.SLOW)
            return
        self._buffer.append(item)
        self._wakeup.set()

    def wake(self) -> None:
        """Make a pending (or the next) :meth:`next` return, even with nothing buffered."""
        self._woken = True
        self._wakeup.set()

    async def next(self, timeout: float | None = None) -> list[Published]:
        """Wait up to ``timeout`` seconds for events; return all buffered ones.

        Returns an empty list on timeout or after :meth:`wake`.

        Raises:
            SubscriptionClosed: the subscription has ended and nothing is left to read
                (events buffered before a shutdown are still delivered first).
        """
        if not self._buffer and self._reason is None and not self._woken:
            self._wakeup.clear()
            try:
                async with asyncio.timeout(timeout):
                    await self._wakeup.wait()
            except TimeoutError:
                pass
        self._woken = False
        if self._buffer:
            batch = list(self._buffer)
            self._buffer.clear()
            return batch
        if self._reason is not None:
            raise SubscriptionClosed(self._reason)
        return []

    def close(self, reason: CloseReason = CloseReason.CLOSED) -> None:
        """End the subscription (idempotent) and wake its reader."""
        if self._reason is not None:
            return
        self._reason = reason
        if reason is not CloseReason.SHUTDOWN:
            self._buffer.clear()  # a reader that fell behind or left reads nothing more
        self._wakeup.set()
        on_close, self._on_close = self._on_close, None
        if on_close is not None:
            on_close(self)
