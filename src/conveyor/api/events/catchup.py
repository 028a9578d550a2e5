"""Replaying the stored feed up to the point where a subscription's live feed begins.

A subscription made at hub cursor ``C`` receives, live, exactly the feed's events after
``C``. A reader resuming after id ``L`` therefore needs the stored events in ``(L, C]``:
it reads them page by page and stops at ``C``. Ids are opaque (only equality is used), so
when ``C`` is never met (the hub had read nothing yet, or ``L`` lies beyond ``C`` because
another API process served it) the replay runs to the store's end instead, and the live
events it already delivered are found by reading the feed from ``C`` up to the last
replayed id, and skipped.

When events after ``L`` were trimmed (retention), the replay goes on from the oldest event
still held and keeps the error, so that the reader is told (:meth:`Catchup.take_gap`).
"""

from __future__ import annotations

from conveyor.backends.base import Backend, Event
from conveyor.errors import HistoryTruncatedError

#: How many pages past the hub's cursor are searched for the replay's end (the hub lags
#: the store by one poll interval, so this is far more than a real overlap needs).
MAX_OVERLAP_PAGES = 5


class Catchup:
    """The stored events after ``after``, up to and including ``until``.

    Args:
        backend: the store to read.
        after: the last event the reader has (``Last-Event-ID``); ``None`` for the
            start of the feed.
        until: the hub cursor its live feed starts after (``None``: the hub has read
            nothing, so the live feed is the whole feed).
        page_size: events per read.
    """

    def __init__(
        self, backend: Backend, after: str | None, until: str | None, page_size: int
    ) -> None:
        self._backend = backend
        self._until = until
        self._page_size = page_size
        self._after = after
        #: The last event read (whether or not the reader's filter wanted it).
        self.last_read = after
        #: Whether the replay met ``until``, so that replay and live feed simply join.
        self.reached = after == until
        self.done = self.reached
        self._gap: HistoryTruncatedError | None = None

    def take_gap(self) -> HistoryTruncatedError | None:
        """The trimmed history the last page skipped, once (None: nothing was skipped)."""
        gap, self._gap = self._gap, None
        return gap

    async def next_page(self) -> list[Event]:
        """The next page of the replay; empty once it is complete.

        If events after the replay's position were trimmed, the page starts at the oldest
        event still held and :meth:`take_gap` says what was skipped.
        """
        if self.done:
            return []
        try:
            events = await self._backend.read_events(self._after, self._page_size)
        except HistoryTruncatedError as gap:
            self._gap = gap
            events = await self._backend.read_events(self._after, self._page_size, allow_gap=True)
        if len(events) < self._page_size:
            self.done = True
        for index, event in enumerate(events):
            if event.id == self._until:
                events = events[: index + 1]
                self.reached = self.done = True
                break
        if events:
            self._after = self.last_read = events[-1].id
        return events

    async def overlap(self) -> set[str]:
        """Ids the live feed will deliver again: empty when the replay met ``until``."""
        if self.reached:
            return set()
        ids: set[str] = set()
        after = self._until
        for _ in range(MAX_OVERLAP_PAGES):
            events = await self._backend.read_events(after, self._page_size, allow_gap=True)
            for event in events:
                ids.add(event.id)
                if event.id == self.last_read:
                    return ids
            if len(events) < self._page_size:
                break
            after = events[-1].id
        # The last replayed id is not in the live window: the reader's id came from some
        # other feed (a wiped store); nothing it holds can come again.
        return set()
