"""The event hub: one poller per API app tails the store's feed and fans it out.

Readers never touch the poller: each has a bounded buffer, and one that falls behind is
dropped (see :class:`Subscription`), so a slow client cannot slow the poller, the other
clients, or the workers writing the feed. The poller runs while anyone listens and stops
after ``idle_timeout`` seconds with no subscribers, so an API nobody streams from does
not poll the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from conveyor._outage import Outage
from conveyor.api.deps import open_backend
from conveyor.api.events.render import Published, publish
from conveyor.api.events.subscription import CloseReason, Subscription
from conveyor.app import Conveyor
from conveyor.backends.base import Backend, Event
from conveyor.errors import BackendUnavailableError, HistoryTruncatedError

logger = logging.getLogger(__name__)

#: Seconds between reads while the store answers with errors.
ERROR_BACKOFF_SECONDS = 1.0


class EventHub:
    """Fans the store's event feed out to subscribers. One per API app.

    Creating a hub does no I/O; the first :meth:`subscribe` starts the poller.

    Args:
        conveyor: whose store to read.
        poll_interval: seconds between reads when the last read was not a full page
            (default ``CONVEYOR_EVENTS_POLL_SECONDS``).
        page_size: events per read.
        queue_size: undelivered events a subscriber may have before it is dropped.
        keepalive_interval: seconds of silence after which a stream sends a keep-alive.
        idle_timeout: seconds without subscribers after which the poller stops.
    """

    def __init__(
        self,
        conveyor: Conveyor,
        *,
        poll_interval: float | None = None,
        page_size: int = 1000,
        queue_size: int = 1000,
        keepalive_interval: float = 15.0,
        idle_timeout: float = 30.0,
    ) -> None:
        self.conveyor = conveyor
        self.poll_interval = poll_interval or conveyor.settings.events_poll_seconds
        self.page_size = page_size
        self.queue_size = queue_size
        self.keepalive_interval = keepalive_interval
        self.idle_timeout = idle_timeout
        self._cursor: str | None = None
        self._synced = False  # whether `_cursor` is a real position in the feed
        self._subscribers: set[Subscription] = set()
        self._task: asyncio.Task[None] | None = None
        self._start_lock: asyncio.Lock | None = None
        self._closed = False

    @property
    def cursor(self) -> str | None:
        """The id of the last event the hub has dispatched (None: none yet)."""
        return self._cursor

    @property
    def subscriber_count(self) -> int:
        """How many subscriptions are open."""
        return len(self._subscribers)

    @property
    def running(self) -> bool:
        """Whether the poller is running."""
        return self._alive()

    def _alive(self) -> bool:
        # A method, not the property, in checks: mypy would narrow a re-read property.
        return self._task is not None and not self._task.done()

    async def backend(self) -> Backend:
        """The store, for replays (the current event loop's connection)."""
        return await open_backend(self.conveyor)

    async def subscribe(
        self, *, job_ids: set[str] | None = None, types: frozenset[str] | None = None
    ) -> Subscription:
        """Open a subscription to events from now on (see :class:`Subscription`).

        Raises:
            BackendUnavailableError: the server is shutting down, or the store cannot be
                read to find the feed's end.
        """
        await self._ensure_running()
        # No await from here on: the poller cannot dispatch between reading the cursor
        # and registering, so the live feed starts exactly after `start`.
        subscription = Subscription(
            start=self._cursor,
            job_ids=job_ids,
            types=types,
            maxsize=self.queue_size,
            on_close=self._subscribers.discard,
        )
        self._subscribers.add(subscription)
        return subscription

    def reopen(self) -> None:
        """Accept subscriptions again after :meth:`close` (a restarted app's lifespan)."""
        self._closed = False

    def close(self) -> None:
        """End every subscription and stop the poller; refuse new subscriptions.

        Synchronous so that a signal handler can call it: a server waits for open
        responses before it shuts its app down, so streams must end first.
        """
        self._closed = True
        for subscription in list(self._subscribers):
            subscription.close(CloseReason.SHUTDOWN)
        if self._task is not None:
            self._task.cancel()

    async def aclose(self) -> None:
        """:meth:`close`, then wait for the poller to stop."""
        self.close()
        task, self._task = self._task, None
        if task is not None and task is not asyncio.current_task():
            with contextlib.suppress(asyncio.CancelledError):
                await task

    # -- the poller --------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailableError("the server is shutting down")

    async def _ensure_running(self) -> None:
        self._check_open()
        if self._alive():
            return
        if self._start_lock is None:
            self._start_lock = asyncio.Lock()
        async with self._start_lock:
            if self._alive():
                return
            backend = await open_backend(self.conveyor)
            await self._skip_to_end(backend)
            self._check_open()  # closed while reading
            self._task = asyncio.create_task(self._run(backend), name="conveyor-event-hub")

    async def _skip_to_end(self, backend: Backend) -> None:
        # Subscribers start from "now": move the cursor past everything already stored
        # (or stored while the poller was idle) without dispatching it.
        after = self._cursor if self._synced else None
        while True:
            events = await backend.read_events(after, self.page_size, allow_gap=True)
            if events:
                after = events[-1].id
            if len(events) < self.page_size:
                break
        self._cursor, self._synced = after, True

    async def _run(self, backend: Backend) -> None:
        try:
            await self._poll(backend)
        except Exception:
            # A bug: end every stream rather than leave them silent; clients reconnect
            # with their last event id and lose nothing.
            logger.exception("the event hub failed; ending its streams")
            for subscription in list(self._subscribers):
                subscription.close(CloseReason.SHUTDOWN)
            self._task = None

    async def _poll(self, backend: Backend) -> None:
        loop = asyncio.get_running_loop()
        idle_since: float | None = None
        reading = Outage(logger, "reading the event feed")
        while True:
            try:
                events = await self._read(backend)
            except Exception as exc:  # keep serving; a bug shows in the log with its type
                reading.failed(f"{type(exc).__name__}: {exc}", retry_in=ERROR_BACKOFF_SECONDS)
                await asyncio.sleep(ERROR_BACKOFF_SECONDS)
                continue
            reading.succeeded()
            if events:
                self._cursor = events[-1].id
                self._dispatch(events)
            if len(events) >= self.page_size:
                await asyncio.sleep(0)  # more is waiting; let readers run, then read on
                continue
            if self._subscribers:
                idle_since = None
            elif idle_since is None:
                idle_since = loop.time()
            elif loop.time() - idle_since >= self.idle_timeout:
                # No await between this check and clearing `_task`: a subscribe() that
                # sees the task has been counted above; one that does not starts anew.
                self._task = None
                return
            await asyncio.sleep(self.poll_interval)

    async def _read(self, backend: Backend) -> list[Event]:
        try:
            return await backend.read_events(self._cursor, self.page_size)
        except HistoryTruncatedError as gap:
            # The hub fell behind the feed by more than its retention (a stalled
            # process). Its streams end as too slow: each client reconnects with its last
            # event id and is told what it missed (`history_truncated`).
            logger.error("the event hub fell behind the retained feed: %s", gap)
            for subscription in list(self._subscribers):
                subscription.close(CloseReason.SLOW)
            return await backend.read_events(self._cursor, self.page_size, allow_gap=True)

    def _dispatch(self, events: list[Event]) -> None:
        subscribers = list(self._subscribers)
        if not subscribers:
            return
        for event in events:
            item: Published | None = None
            for subscription in subscribers:
                if subscription.wants(event):
                    if item is None:
                        item = publish(event)
                    subscription.offer(item)
