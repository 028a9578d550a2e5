"""The webhook deliverer: a background service of API processes.

Only the holder of the leader lock ``webhooks`` delivers; other API processes stand by
and take over when it stops renewing. The leader tails the store's event feed from the
cursor ``webhooks`` and, for each job that finished (``job_completed``, ``job_failed``,
``job_cancelled``) with a ``callback_url``, POSTs the outcome, retrying failures with
exponential backoff and full jitter.

What survives a restart (at least once, no duplicate in the normal case):

- The cursor advances past an event only once its delivery is *settled*: delivered,
  given up, or durably scheduled for retry (state ``pending`` with ``nextAttemptAt``
  stored on the job, and the job's id in the retry list, the cursor
  ``webhooks.retrying``). Retry list first, cursor second.
- A new leader reloads the retry list and resumes each retry at its stored time and
  attempt count, then tails from the cursor. A job whose stored state already says
  ``delivered`` or ``failed`` for this delivery id is skipped, so events re-read after
  a crash are not sent again.
- A crash between a receiver's 2xx and storing ``delivered`` sends that delivery once
  more, with the same ``X-Webhook-Id`` / ``webhook-id``: receivers deduplicate by it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from typing import Any

import httpx
import orjson

from conveyor._aio import first_of
from conveyor._outage import Outage
from conveyor.app import Conveyor
from conveyor.backends.base import Backend, Event
from conveyor.backoff import retry_delay
from conveyor.errors import (
    BackendError,
    ConveyorError,
    HistoryTruncatedError,
    LostLeadershipError,
)
from conveyor.job import Job
from conveyor.leadership import LeaderLease
from conveyor.webhooks import payload
from conveyor.webhooks.signing import signed_headers
from conveyor.webhooks.ssrf import PinnedTransport, Resolver, TargetRefusedError, system_resolver
from conveyor.wire import format_instant, parse_instant

logger = logging.getLogger(__name__)

LOCK = "webhooks"
CURSOR = "webhooks"
RETRY_CURSOR = "webhooks.retrying"
USER_AGENT = "Conveyor-Webhooks/1"


class _Watermark:
    """Events read but not yet settled, in feed order; the cursor is the last event
    before the first unsettled one."""

    def __init__(self, cursor: str | None) -> None:
        self.cursor = cursor  # highest id with everything up to it settled
        self.read_pos = cursor  # highest id read
        self._open: deque[str] = deque()
        self._unsettled: set[str] = set()

    @property
    def outstanding(self) -> int:
        return len(self._open)

    def add(self, event_id: str, settled: bool) -> None:
        self.read_pos = event_id
        if settled and not self._open:
            self.cursor = event_id
            return
        self._open.append(event_id)
        if not settled:
            self._unsettled.add(event_id)

    def settle(self, event_id: str) -> None:
        self._unsettled.discard(event_id)
        while self._open and self._open[0] not in self._unsettled:
            self.cursor = self._open.popleft()


class WebhookDeliverer:
    """Delivers webhooks of finished jobs while holding the ``webhooks`` leader lock.

    Args:
        app: whose store to read; its settings give the defaults below
            (``CONVEYOR_WEBHOOK_*``), and ``webhook_allow_private`` lifts the SSRF guard.
        max_attempts: attempts per delivery before it is given up (state ``failed``).
        backoff: the first retry's maximum delay in seconds; doubles per attempt, and
            each delay is drawn uniformly from zero to that (full jitter).
        backoff_max: the cap on one delay.
        timeout: seconds for one attempt (connect, send, first byte of the answer).
        concurrency: the most deliveries in flight at once.
        poll_interval: seconds between reads of the feed when it has nothing new.
        lock_ttl: the leader lock's lease; renewed every third of it.
        max_retrying: the most deliveries in the durable retry list; past it, a failing
            delivery holds the cursor until it settles.
        resolver: host name resolution for the SSRF guard (tests inject one).
    """

    def __init__(
        self,
        app: Conveyor,
        *,
        max_attempts: int | None = None,
        backoff: float = 2.0,
        backoff_max: float = 900.0,
        timeout: float | None = None,
        concurrency: int | None = None,
        poll_interval: float = 0.2,
        lock_ttl: float = 15.0,
        page_size: int = 500,
        max_outstanding: int = 10_000,
        max_retrying: int = 10_000,
        resolver: Resolver = system_resolver,
    ) -> None:
        settings = app.settings
        self.app = app
        self.max_attempts = max_attempts or settings.webhook_max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.timeout = timeout or settings.webhook_timeout_seconds
        self.concurrency = concurrency or settings.webhook_concurrency
        self.poll_interval = poll_interval
        self.lock_ttl = lock_ttl
        self.page_size = page_size
        self.max_outstanding = max_outstanding
        self.max_retrying = max_retrying
        self.resolver = resolver
        self._lock = LeaderLease(LOCK, lock_ttl)
        self.owner = self._lock.owner
        self.delivered = 0
        self.failed = 0
        self._stop = asyncio.Event()
        self._reading = Outage(logger, "webhooks: reading events")
        self._saving = Outage(logger, "webhooks: saving the cursor")
        self._sem = asyncio.Semaphore(self.concurrency)
        self._retrying: dict[str, str] = {}  # job id -> delivery id, scheduled for retry
        self._retry_dirty = False
        self._active: set[str] = set()  # delivery ids with a task running
        self._progress = asyncio.Event()
        self.leading = False

    def stop(self) -> None:
        """Ask :meth:`run` to return (deliveries in flight resume on the next leader)."""
        self._stop.set()

    # -- leadership --------------------------------------------------------------------
    async def run(self) -> None:
        """Stand by or lead until :meth:`stop`; never raises for store errors."""
        backend = await self.app.backend()
        stop = asyncio.create_task(self._stop.wait())
        try:
            while not self._stop.is_set():
                if not await self._lock.try_acquire(backend):
                    await first_of(asyncio.sleep(self._lock.pause()), stop)
                    continue
                session = asyncio.create_task(self._lead(backend))
                await first_of(session, stop)
                if not session.done():
                    session.cancel()
                await asyncio.wait([session])
                self.leading = False
                error = None if session.cancelled() else session.exception()
                if error is not None and not _only_lost(error):
                    logger.error("webhooks: delivery session failed", exc_info=error)
                    await first_of(asyncio.sleep(1.0), stop)
        finally:
            stop.cancel()
            await self._lock.release(backend)

    async def _lead(self, backend: Backend) -> None:
        self.leading = True
        self._retrying.clear()
        self._active.clear()
        transport = PinnedTransport(
            allow_private=self.app.settings.webhook_allow_private, resolver=self.resolver
        )
        async with (
            httpx.AsyncClient(
                transport=transport,
                follow_redirects=False,
                trust_env=False,
                timeout=httpx.Timeout(self.timeout),
                headers={"User-Agent": USER_AGENT},
            ) as client,
            asyncio.TaskGroup() as tg,
        ):
            tg.create_task(self._lock.keep(backend))
            tg.create_task(self._tail(backend, client, tg))

    # -- tailing the feed --------------------------------------------------------------
    async def _tail(
        self, backend: Backend, client: httpx.AsyncClient, tg: asyncio.TaskGroup
    ) -> None:
        cursor = await _retrying_call(backend.get_cursor, CURSOR)
        mark = _Watermark(cursor)
        retry_list = await _retrying_call(backend.get_cursor, RETRY_CURSOR)
        for job_id in _decode_ids(retry_list):
            self._spawn(tg, backend, client, job_id, None, mark)
        saved = (cursor, retry_list)
        last_flush = 0.0
        while True:
            if mark.outstanding >= self.max_outstanding:
                self._progress.clear()
                await self._progress.wait()
                continue
            try:
                events = await self._read(backend, mark.read_pos)
            except ConveyorError as exc:
                self._reading.failed(exc, retry_in=1.0)
                await asyncio.sleep(1.0)
                continue
            self._reading.succeeded()
            for event in events:
                final = event.type in payload.FINAL_EVENTS
                mark.add(event.id, settled=not final)
                if final:
                    self._spawn(tg, backend, client, event.job_id, event, mark)
            now = time.monotonic()
            if not events or now - last_flush >= 0.5:
                saved = await self._flush(backend, mark, saved)
                last_flush = now
            if len(events) < self.page_size:
                await asyncio.sleep(self.poll_interval)

    async def _read(self, backend: Backend, after: str | None) -> list[Event]:
        """The next page of the feed; past trimmed history with an error in the log."""
        try:
            return await backend.read_events(after, self.page_size)
        except HistoryTruncatedError as gap:
            lost = "an unknown number of" if gap.lost is None else str(gap.lost)
            since = "" if gap.oldest_at is None else f" (before {format_instant(gap.oldest_at)})"
            logger.error(
                "webhooks: %s events after %s were trimmed from the event feed%s before "
                "they were delivered (the deliverer was down longer than "
                "CONVEYOR_EVENT_RETENTION_SECONDS=%g); jobs that finished then get no "
                "webhook. Going on from %s",
                lost,
                gap.after,
                since,
                self.app.settings.event_retention_seconds,
                gap.oldest,
            )
            return await backend.read_events(after, self.page_size, allow_gap=True)

    async def _flush(
        self, backend: Backend, mark: _Watermark, saved: tuple[str | None, str | None]
    ) -> tuple[str | None, str | None]:
        """Store the retry list, then the cursor (in that order: see the module doc)."""
        cursor, retry_list = saved
        try:
            if self._retry_dirty:
                retry_list = orjson.dumps(sorted(self._retrying)).decode()
                self._retry_dirty = False
                await backend.set_cursor(RETRY_CURSOR, retry_list)
            # Read once: deliveries settle (and move the mark) while this awaits.
            position = mark.cursor
            if position is not None and position != cursor:
                await backend.set_cursor(CURSOR, position)
                cursor = position
        except ConveyorError as exc:
            self._retry_dirty = True
            self._saving.failed(exc)
        else:
            self._saving.succeeded()
        return cursor, retry_list

    def _spawn(
        self,
        tg: asyncio.TaskGroup,
        backend: Backend,
        client: httpx.AsyncClient,
        job_id: str,
        event: Event | None,
        mark: _Watermark,
    ) -> None:
        async def run() -> None:
            try:
                await self._handle(backend, client, job_id, event, mark)
            finally:
                if event is not None:
                    mark.settle(event.id)
                self._progress.set()

        delivery = run()
        try:
            tg.create_task(delivery)
        except RuntimeError:
            # The session is ending (leadership lost, or stopping) while the feed was
            # being read: the event stays unsettled, so the cursor stays before it and
            # the next leader delivers it.
            delivery.close()

    # -- one delivery --------------------------------------------------------------------
    async def _handle(
        self,
        backend: Backend,
        client: httpx.AsyncClient,
        job_id: str,
        event: Event | None,
        mark: _Watermark,
    ) -> None:
        async with self._sem:
            job = await _retrying_call(backend.get_job, job_id)
        if job is None or not job.callback_url or not job.status.finished:
            self._forget_retry(job_id)
            return
        msg_id = payload.message_id(job)
        if msg_id in self._active:
            return  # already running (a resumed retry whose event was read again)
        self._active.add(msg_id)
        try:
            stored = job.webhook if isinstance(job.webhook, dict) else {}
            same = stored.get("id") == msg_id
            if same and stored.get("state") in ("delivered", "failed"):
                self._forget_retry(job_id)
                return
            attempts = int(stored.get("attempts") or 0) if same else 0
            next_at = _stored_instant(stored.get("nextAttemptAt")) if same else None
            await self._deliver(backend, client, job, msg_id, attempts, next_at, event, mark)
            if self._retrying.get(job_id) == msg_id:
                self._forget_retry(job_id)
        finally:
            self._active.discard(msg_id)

    def _forget_retry(self, job_id: str) -> None:
        if self._retrying.pop(job_id, None) is not None:
            self._retry_dirty = True

    async def _deliver(
        self,
        backend: Backend,
        client: httpx.AsyncClient,
        job: Job,
        msg_id: str,
        attempts: int,
        next_at: float | None,
        event: Event | None,
        mark: _Watermark,
    ) -> None:
        assert job.callback_url is not None
        while True:
            if next_at is not None and next_at > time.time():
                await asyncio.sleep(next_at - time.time())
            attempts += 1
            status, error = await self._attempt(client, job, msg_id)
            now = time.time()
            if error is None:
                self.delivered += 1
                await self._record(
                    backend, job.id, msg_id, "delivered", attempts, status, None, delivered_at=now
                )
                return
            permanent = status == -1
            if permanent or attempts >= self.max_attempts:
                self.failed += 1
                logger.warning(
                    "webhook %s to %s failed after %d attempts: %s",
                    msg_id,
                    job.callback_url,
                    attempts,
                    error,
                )
                await self._record(
                    backend,
                    job.id,
                    msg_id,
                    "failed",
                    attempts,
                    None if permanent else status,
                    error,
                )
                return
            next_at = now + retry_delay(attempts, self.backoff, self.backoff_max)
            await self._record(
                backend, job.id, msg_id, "pending", attempts, status, error, next_at=next_at
            )
            if event is not None and len(self._retrying) < self.max_retrying:
                # Durably scheduled: the cursor may pass this event.
                self._retrying[job.id] = msg_id
                self._retry_dirty = True
                mark.settle(event.id)
                self._progress.set()
                event = None

    async def _attempt(
        self, client: httpx.AsyncClient, job: Job, msg_id: str
    ) -> tuple[int | None, str | None]:
        """One POST: ``(status, None)`` on 2xx, else ``(status or None, error)``;
        status -1 marks a refusal that retrying cannot fix."""
        assert job.callback_url is not None
        sent_at = time.time()
        data = payload.body(job, sent_at)
        headers = signed_headers(data, msg_id, int(sent_at), job.callback_secret)
        headers["Content-Type"] = "application/json"
        try:
            async with (
                self._sem,
                client.stream("POST", job.callback_url, content=data, headers=headers) as response,
            ):
                status = response.status_code
        except TargetRefusedError as exc:
            return -1, str(exc)
        except httpx.InvalidURL as exc:  # e.g. an IPv4 spelling httpx itself refuses
            return -1, f"refused: invalid URL ({exc})"
        except httpx.TimeoutException:
            return None, f"timeout after {self.timeout:g}s"
        except (httpx.HTTPError, OSError) as exc:
            return None, f"{type(exc).__name__}: {exc}"[:300]
        if 200 <= status < 300:
            return status, None
        if 300 <= status < 400:
            return status, f"HTTP {status}: redirects are not followed"
        return status, f"HTTP {status}"

    async def _record(
        self,
        backend: Backend,
        job_id: str,
        msg_id: str,
        kind: str,
        attempts: int,
        status: int | None,
        error: str | None,
        *,
        next_at: float | None = None,
        delivered_at: float | None = None,
    ) -> None:
        state = payload.state(
            msg_id,
            kind,
            attempts,
            last_status=status,
            last_error=error,
            next_attempt_at=next_at,
            delivered_at=delivered_at,
        )
        await _retrying_call(backend.record_webhook, job_id, state)


def _only_lost(error: BaseException) -> bool:
    if isinstance(error, BaseExceptionGroup):
        return all(_only_lost(e) for e in error.exceptions)
    return isinstance(error, LostLeadershipError)


async def _retrying_call(fn: Any, *args: Any) -> Any:
    """A store call, retried while the store is unavailable (the lock decides who runs)."""
    delay = 0.1
    while True:
        try:
            return await fn(*args)
        except BackendError as exc:
            logger.warning("webhooks: store call failed (%s); retrying", exc)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)


def _stored_instant(value: Any) -> float | None:
    """An instant the deliverer wrote into a job's webhook state, or None."""
    try:
        return parse_instant(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _decode_ids(text: str | None) -> list[str]:
    if not text:
        return []
    try:
        ids = orjson.loads(text)
    except orjson.JSONDecodeError:
        return []
    return [i for i in ids if isinstance(i, str)] if isinstance(ids, list) else []
