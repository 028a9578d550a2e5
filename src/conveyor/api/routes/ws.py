"""``WS /ws/jobs``: submit jobs and follow their events over one WebSocket.

Messages in (JSON objects; an optional ``requestId`` is echoed in the answer):
``{"type": "submit_job", "job": {...}}`` (the body of ``POST /api/v1/jobs``) answers
``job_accepted`` and follows the job from its creation; ``{"type": "subscribe", "jobId"}``
answers ``subscribed`` and follows the job's events from now on; ``unsubscribe`` answers
``unsubscribed``; ``ping`` answers ``pong``. Events go out as the SSE stream's JSON (a
``submit_job`` whose first events were trimmed before they could be replayed gets
``{"type": "history_truncated", "jobId", "oldestEventId", "lost"}`` first). A bad
message is answered with ``{"type": "error", "error": {code, message, details}}`` and the
socket stays open. A client too slow to read its events gets an error and the socket is
closed (1013); so is every socket when the server stops (1001).

Bearer auth happens in the middleware: ``Authorization: Bearer <token>``, or, for
browsers (which cannot set headers on a WebSocket), a ``bearer.<token>`` subprotocol. So
do the Host and Origin checks (:mod:`conveyor.api.browser`): a handshake from a page on
another site is refused before it reaches this route.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast

import orjson
from fastapi import APIRouter, WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketDisconnected

from conveyor.api.errors import conveyor_error_response, internal_error, shorten
from conveyor.api.events import (
    Catchup,
    CloseReason,
    EventHub,
    Subscription,
    SubscriptionClosed,
    hub_of,
    publish,
)
from conveyor.api.schemas import JOB_ID
from conveyor.api.submission import Submitter, parse_submission
from conveyor.app import Conveyor
from conveyor.errors import (
    BackendUnavailableError,
    ConveyorError,
    JobNotFoundError,
    SerializationError,
    ValidationError,
)
from conveyor.serialization import loads_input
from conveyor.wire import render_accepted

logger = logging.getLogger(__name__)

router = APIRouter()

#: The subprotocol a client may offer next to ``bearer.<token>``, so that the server
#: need not echo the token back to select a subprotocol.
SUBPROTOCOL = "conveyor.v1"
#: Jobs one socket may follow at once.
MAX_FOLLOWED_JOBS = 1000
#: Messages read ahead of handling; beyond this the socket is not read (backpressure).
INBOX_SIZE = 8

Message = dict[str, Any]


class RefusedError(Exception):
    """A message this socket answers with an error (not a Conveyor exception)."""

    def __init__(self, code: str, message: str, details: Message | None = None) -> None:
        super().__init__(message)
        self.error: Message = {"code": code, "message": message, "details": details or {}}


def choose_subprotocol(offered: Sequence[str]) -> str | None:
    """The subprotocol to accept: ours if offered, else the bearer one (browsers fail a
    handshake that offered subprotocols and got none back)."""
    if SUBPROTOCOL in offered:
        return SUBPROTOCOL
    return next((p for p in offered if p[:7].lower() == "bearer."), None)


def error_of(exc: Exception) -> Message:
    """The error shape HTTP would answer ``exc`` with (a bug is logged, as over HTTP)."""
    # Rendered by the HTTP mapping itself, so codes and details never drift from it.
    if isinstance(exc, ConveyorError):
        response = conveyor_error_response(exc)
    else:
        response = internal_error(exc, "a /ws/jobs message")
    body: Message = orjson.loads(response.body)
    return cast(Message, body["error"])


@router.websocket("/ws/jobs")
async def jobs_socket(websocket: WebSocket) -> None:
    """Submit jobs and receive their events."""
    await websocket.accept(subprotocol=choose_subprotocol(websocket.scope.get("subprotocols", [])))
    state = websocket.app.state
    hub = hub_of(state)
    try:
        subscription = await hub.subscribe(job_ids=set())
    except ConveyorError as exc:
        with contextlib.suppress(WebSocketDisconnect, WebSocketDisconnected):
            await websocket.send_text(
                orjson.dumps({"type": "error", "error": error_of(exc)}).decode()
            )
            await websocket.close(1013)
        return
    session = JobSocket(
        websocket,
        cast(Conveyor, state.conveyor),
        cast(Submitter, state.submitter),
        hub,
        subscription,
    )
    await session.run()


class JobSocket:
    """One connection: a reader task feeds an inbox; one loop answers messages and
    sends events, so that what a client sees about a job is always in order."""

    def __init__(
        self,
        websocket: WebSocket,
        conveyor: Conveyor,
        submitter: Submitter,
        hub: EventHub,
        subscription: Subscription,
    ) -> None:
        self.websocket = websocket
        self.submitter = submitter
        self.conveyor = conveyor
        self.hub = hub
        self.subscription = subscription
        if subscription.job_ids is None:
            raise ValueError("a socket's subscription follows chosen jobs (job_ids=set())")
        #: The jobs this socket follows: the subscription's own filter.
        self.followed = subscription.job_ids
        self.max_bytes = conveyor.settings.max_body_bytes
        self._inbox: asyncio.Queue[str | bytes] = asyncio.Queue(INBOX_SIZE)
        self._gone = False
        self._handlers: dict[str, Callable[[Message, Message], Awaitable[None]]] = {
            "submit_job": self._submit,
            "subscribe": self._subscribe,
            "unsubscribe": self._unsubscribe,
            "ping": self._ping,
        }

    async def run(self) -> None:
        """Serve until the client leaves, falls behind, or the server stops."""
        reader = asyncio.create_task(self._read())
        try:
            await self._serve()
        except (WebSocketDisconnect, WebSocketDisconnected):
            pass
        finally:
            self.subscription.close()
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await reader

    async def _read(self) -> None:
        try:
            while True:
                message = await self.websocket.receive()
                if message["type"] == "websocket.disconnect":
                    return
                text = message.get("text")
                await self._inbox.put(text if text is not None else message.get("bytes") or b"")
                self.subscription.wake()
        except (WebSocketDisconnect, WebSocketDisconnected):
            return
        finally:
            self._gone = True
            self.subscription.wake()

    async def _serve(self) -> None:
        while True:
            while not self._inbox.empty():
                await self._handle(self._inbox.get_nowait())
            if self._gone:
                return
            try:
                batch = await self.subscription.next()
            except SubscriptionClosed as closed:
                await self._closing(closed.reason)
                return
            for item in batch:
                if item.job_id in self.followed:  # it may have been unsubscribed since
                    await self.websocket.send_text(item.json)

    async def _closing(self, reason: CloseReason) -> None:
        if reason is CloseReason.SLOW:
            error = RefusedError(
                "SLOW_CONSUMER",
                "the client fell behind its events; reconnect and subscribe again",
                {"maxBuffered": self.subscription.maxsize},
            )
            await self._send({"type": "error", "error": error.error})
            await self.websocket.close(1013, "too slow")
        elif reason is CloseReason.SHUTDOWN:
            await self.websocket.close(1001, "server shutting down")

    async def _send(self, message: Message) -> None:
        await self.websocket.send_text(orjson.dumps(message).decode())

    # -- messages ----------------------------------------------------------------------
    async def _handle(self, raw: str | bytes) -> None:
        reply: Message = {}
        try:
            message = self._decode(raw)
            request_id = message.get("requestId")
            if isinstance(request_id, str | int) and not isinstance(request_id, bool):
                reply["requestId"] = (
                    shorten(request_id, 200) if isinstance(request_id, str) else request_id
                )
            kind = message.get("type")
            handler = self._handlers.get(kind) if isinstance(kind, str) else None
            if handler is None:
                raise RefusedError(
                    "VALIDATION_ERROR",
                    f"unknown message type {shorten(str(kind))!r}",
                    {"known": sorted(self._handlers)},
                )
            await handler(message, reply)
        except RefusedError as exc:
            await self._send({"type": "error", **reply, "error": exc.error})
        except ConveyorError as exc:
            await self._send({"type": "error", **reply, "error": error_of(exc)})
        except (WebSocketDisconnect, WebSocketDisconnected):
            raise
        except Exception as exc:
            # A bug, not bad input: answered like HTTP's last resort; the socket stays open.
            await self._send({"type": "error", **reply, "error": error_of(exc)})

    def _decode(self, raw: str | bytes) -> Message:
        size = len(raw) if isinstance(raw, bytes) else len(raw.encode("utf-8", "replace"))
        if size > self.max_bytes:
            raise RefusedError(
                "PAYLOAD_TOO_LARGE",
                f"message exceeds {self.max_bytes} bytes",
                {"maxBytes": self.max_bytes},
            )
        try:
            message = loads_input(raw, what="the message")
        except SerializationError as exc:
            raise RefusedError(
                "VALIDATION_ERROR",
                "the message is not valid JSON",
                {"reason": shorten(str(exc), 200)},
            ) from None
        if not isinstance(message, dict):
            raise RefusedError("VALIDATION_ERROR", "a message must be a JSON object")
        return message

    def _job_id(self, message: Message) -> str:
        job_id = message.get("jobId")
        if not isinstance(job_id, str):
            raise ValidationError(
                "jobId is required",
                {
                    "errors": [
                        {"loc": ["jobId"], "message": "must be a string", "type": "string_type"}
                    ]
                },
            )
        if not JOB_ID.fullmatch(job_id):
            raise JobNotFoundError(shorten(job_id))
        return job_id

    def _check_room(self, job_id: str | None) -> None:
        if job_id not in self.followed and len(self.followed) >= MAX_FOLLOWED_JOBS:
            raise RefusedError(
                "VALIDATION_ERROR",
                f"a socket may follow at most {MAX_FOLLOWED_JOBS} jobs; unsubscribe first",
                {"limit": MAX_FOLLOWED_JOBS},
            )

    async def _submit(self, message: Message, reply: Message) -> None:
        if "job" not in message:
            raise ValidationError(
                "submit_job needs a job",
                {"errors": [{"loc": ["job"], "message": "field required", "type": "missing"}]},
            )
        submission = parse_submission(message["job"], "job", ("job",))
        self._check_room(None)  # before storing: refuse, not accept and then not follow
        before = self.hub.cursor
        result = await self.submitter.submit(submission, submission.idempotency_key)
        job = result.job
        # Follow the job before anything else can run, and note where its live events
        # start: the ones the hub dispatched since `before` are replayed below.
        self.followed.add(job.id)
        until = self.hub.cursor
        await self._send(
            {
                "type": "job_accepted",
                **reply,
                **render_accepted(job),
            }
        )
        if before != until:
            await self._replay(job.id, before, until)

    async def _replay(self, job_id: str, after: str | None, until: str | None) -> None:
        catchup = Catchup(await self.hub.backend(), after, until, self.hub.page_size)
        try:
            while page := await catchup.next_page():
                if (gap := catchup.take_gap()) is not None:
                    message = {"type": "history_truncated", "jobId": job_id}
                    await self._send({**message, "oldestEventId": gap.oldest, "lost": gap.lost})
                for event in page:
                    if event.job_id == job_id and self.subscription.wants(event):
                        await self.websocket.send_text(publish(event).json)
        except (WebSocketDisconnect, WebSocketDisconnected):
            raise
        except BackendUnavailableError as exc:
            # The job is accepted and followed; only its first events may be missing.
            logger.warning("replaying job %s's events failed: %s", job_id, exc)
        except Exception:
            logger.exception("replaying job %s's events failed", job_id)

    async def _subscribe(self, message: Message, reply: Message) -> None:
        job_id = self._job_id(message)
        self._check_room(job_id)
        backend = await self.hub.backend()
        job = await backend.get_job(job_id)
        if job is None:
            raise JobNotFoundError(job_id)
        self.followed.add(job_id)
        await self._send({"type": "subscribed", **reply, "jobId": job_id})

    async def _unsubscribe(self, message: Message, reply: Message) -> None:
        job_id = self._job_id(message)
        self.followed.discard(job_id)
        await self._send({"type": "unsubscribed", **reply, "jobId": job_id})

    async def _ping(self, message: Message, reply: Message) -> None:
        await self._send({"type": "pong", **reply})
