"""The Server-Sent Events response: replay, then live events, keep-alives, clean ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncGenerator

from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from conveyor.api.events.catchup import Catchup
from conveyor.api.events.hub import EventHub
from conveyor.api.events.render import Published, error_frame, publish, truncated_frame
from conveyor.api.events.subscription import CloseReason, Subscription, SubscriptionClosed
from conveyor.backends.base import Event
from conveyor.errors import BackendUnavailableError

logger = logging.getLogger(__name__)

#: Milliseconds a client waits before reconnecting (sent once, first).
RETRY_MILLISECONDS = 1000
KEEPALIVE = b": keep-alive\n\n"

HEADERS = {
    "content-type": "text/event-stream",
    "cache-control": "no-cache",
    # nginx buffers proxied responses by default, which would hold events back.
    "x-accel-buffering": "no",
}


class EventStreamResponse(Response):
    """Streams a subscription as ``text/event-stream``.

    Ends when the client disconnects (noticed at once, not at the next write), when the
    hub shuts down, or, after an ``event: error`` message, when the subscriber fell
    behind or the store failed mid-replay. The subscription is always closed. A replay
    from an id whose following events were trimmed starts with an
    ``event: history_truncated`` message.

    Args:
        hub: the app's hub (for its keep-alive interval).
        subscription: already registered, so that nothing is missed before streaming.
        catchup: the replay for a resuming client, with its first page already read
            (so that an invalid ``Last-Event-ID`` or a dead store gets a proper error
            answer instead of a broken stream).
        first_page: that first page.
    """

    media_type = "text/event-stream"

    def __init__(
        self,
        hub: EventHub,
        subscription: Subscription,
        catchup: Catchup | None = None,
        first_page: list[Event] | None = None,
    ) -> None:
        # Not Response.__init__: it would declare `content-length: 0` for the empty body.
        self.status_code = 200
        self.background = None
        self.init_headers(HEADERS)
        self._hub = hub
        self._subscription = subscription
        self._catchup = catchup
        self._first_page = first_page or []

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        subscription = self._subscription
        watcher = asyncio.create_task(_watch_disconnect(receive, subscription))
        frames = self._frames()
        try:
            await send({"type": "http.response.start", "status": 200, "headers": self.raw_headers})
            async for chunk in frames:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write (ASGI 2.4 servers raise instead of telling)
        finally:
            subscription.close()
            watcher.cancel()
            await frames.aclose()
            with contextlib.suppress(asyncio.CancelledError):
                await watcher

    async def _frames(self) -> AsyncGenerator[bytes, None]:
        subscription = self._subscription
        yield f"retry: {RETRY_MILLISECONDS}\n\n".encode()
        skip: set[str] = set()
        if self._catchup is not None:
            page = self._first_page
            while not subscription.closed:
                gap = self._catchup.take_gap()
                if gap is not None:
                    yield truncated_frame(gap)
                if not page:
                    break
                chunk = b"".join(publish(e).sse() for e in page if subscription.wants(e))
                if chunk:
                    yield chunk
                try:
                    page = await self._catchup.next_page()
                except Exception as exc:
                    yield _replay_failed(exc)
                    return
            try:
                skip = await self._catchup.overlap()
            except Exception as exc:
                yield _replay_failed(exc)
                return
        while True:
            try:
                batch = await subscription.next(self._hub.keepalive_interval)
            except SubscriptionClosed as closed:
                if closed.reason is CloseReason.SLOW:
                    yield error_frame(
                        "SLOW_CONSUMER",
                        "the client fell behind the event feed; reconnect to resume",
                        {"maxBuffered": subscription.maxsize},
                    )
                return
            if not batch:
                yield KEEPALIVE
                continue
            if skip:
                batch = _without_overlap(batch, skip)
            if batch:
                yield b"".join(item.sse() for item in batch)


def _without_overlap(batch: list[Published], skip: set[str]) -> list[Published]:
    """Drop the live events the replay already sent (consuming ``skip``).

    The overlap is a prefix of the live feed, so the first event not in it ends it.
    """
    kept: list[Published] = []
    for item in batch:
        if skip and item.id in skip:
            skip.discard(item.id)
            continue
        skip.clear()
        kept.append(item)
    return kept


def _replay_failed(exc: Exception) -> bytes:
    # Headers are sent: the failure can only be told in the stream, and only the store
    # saying it cannot serve now is "unavailable"; anything else is a bug.
    if not isinstance(exc, BackendUnavailableError):
        logger.error("event replay failed", exc_info=exc)
        return error_frame("INTERNAL_ERROR", "internal error", {})
    logger.warning("event replay failed: %s", exc)
    return error_frame(
        "UNAVAILABLE",
        "the event store failed during the replay; reconnect to resume",
        {"reason": str(exc)},
    )


async def _watch_disconnect(receive: Receive, subscription: Subscription) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            subscription.close()
            return
