"""Submitting a job from outside: parse, check, dedupe, store. One path for the HTTP route,
the raw ASGI fast path and the WebSocket.

A submission is checked in this order, and refused at the first failure with nothing
stored: its shape (:class:`~conveyor.api.schemas.SubmitJob`), its task (registered?), its
parameters against the task's signature and annotations, its callback target (a literal
private address is refused unless allowed), its options (:mod:`conveyor.limits`). The job
is then built by the same function as every other job
(:func:`conveyor.task.new_job`) and stored with concurrent submits in one store call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any
from urllib.parse import urlsplit

import pydantic
from starlette.responses import Response
from starlette.types import Scope

from conveyor.addresses import forbidden_reason, literal_ip
from conveyor.api.batching import SubmitBatcher
from conveyor.api.bodies import read_json_body
from conveyor.api.consumers import ConsumerWatch
from conveyor.api.errors import JSONResponse, validation_error
from conveyor.api.params import ParameterChecker
from conveyor.api.schemas import SubmitJob
from conveyor.app import Conveyor
from conveyor.backends.base import EnqueueResult
from conveyor.errors import ValidationError
from conveyor.task import make_job_options
from conveyor.wire import render_accepted


def parse_submission(payload: Any, what: str, loc: tuple[str, ...]) -> SubmitJob:
    """Validate a decoded submission (an HTTP body, or a WebSocket message's ``job``).

    Args:
        payload: the decoded JSON.
        what: how to name it in messages ("the request body").
        loc: where it sits, as the prefix of each field error's ``loc``.

    Raises:
        ValidationError: not an object, or a field is invalid.
    """
    if not isinstance(payload, dict):
        raise ValidationError(f"{what} must be a JSON object", {"errors": []})
    try:
        return SubmitJob.model_validate(payload)
    except pydantic.ValidationError as exc:
        raise validation_error(exc, "invalid job submission", loc) from None


def check_callback_target(url: str) -> None:
    """Refuse at once a callback to a literal address the deliverer would refuse (any
    spelling: ``127.1``, ``2130706433``, ``[::ffff:7f00:1]``). Host names are resolved
    and checked when delivering, on the address actually connected to.

    Raises:
        ValidationError: naming the address and why.
    """
    ip = literal_ip(urlsplit(url).hostname or "")
    reason = None if ip is None else forbidden_reason(ip)
    if reason is not None:
        raise ValidationError(
            f"callbackUrl points to a {reason} address ({ip}); webhooks go to public "
            "addresses only unless CONVEYOR_WEBHOOK_ALLOW_PRIVATE=1",
            {"errors": [{"loc": ["body", "callbackUrl"], "message": f"{reason} address"}]},
        )


def idempotency_key(header: str | None, submission: SubmitJob) -> str | None:
    """The submission's key: the ``Idempotency-Key`` header or the body's
    ``idempotencyKey`` (both may be given if they agree).

    Raises:
        ValidationError: the two differ.
    """
    body = submission.idempotency_key
    if header is not None and body is not None and header != body:
        raise ValidationError(
            "the Idempotency-Key header and idempotencyKey differ",
            {"errors": [{"loc": ["header", "Idempotency-Key"], "message": "differs from body"}]},
        )
    return header if header is not None else body


class Submitter:
    """Stores submissions for one API app.

    Args:
        conveyor: the app whose tasks are submitted.
        checker: the app's cache of parameter validators.
        batcher: stores concurrent submits in one store call.
        watch: says in the log when a job lands on a queue no live worker consumes.
    """

    def __init__(
        self,
        conveyor: Conveyor,
        checker: ParameterChecker,
        batcher: SubmitBatcher,
        watch: ConsumerWatch | None = None,
    ) -> None:
        self.conveyor = conveyor
        self.checker = checker
        self.batcher = batcher
        self.watch = watch

    async def submit(self, submission: SubmitJob, key: str | None) -> EnqueueResult:
        """Check a submission against its task and store its job (or find the job its
        idempotency key names).

        Raises:
            UnknownTaskError, InvalidArgumentsError, SerializationError, ValidationError,
            QueueFullError, BackendUnavailableError
        """
        conveyor = self.conveyor
        task = conveyor.get_task(submission.type)
        args, kwargs = self.checker.check(task, submission.parameters)
        if submission.callback_url is not None and not conveyor.settings.webhook_allow_private:
            check_callback_target(submission.callback_url)
        options = make_job_options(
            delay=submission.delay,
            run_at=submission.run_at_timestamp(),
            priority=submission.priority,
            idempotency_key=key,
            queue=submission.queue,
            retries=submission.max_retries,
            timeout=submission.timeout,
            callback_url=submission.callback_url,
            callback_secret=submission.callback_secret,
        )
        job = conveyor.job_by_name(task.name, args, kwargs, options, bound=True)
        result = await self.batcher.enqueue(job)
        if self.watch is not None and result.created:
            self.watch.accepted(await conveyor.backend(), job.queue)
        return result

    async def answer_http(
        self,
        scope: Scope,
        content_type: str | None,
        read_body: Callable[[], Awaitable[bytes]],
        header_key: str | None,
    ) -> Response:
        """Read, check and store one submission; the answer to ``POST /api/v1/jobs``
        (202 and ``Location`` for a new job, 200 for one its idempotency key names).

        Args:
            scope: the request's ASGI scope (for ``root_path``).
            content_type: the first ``Content-Type`` header, if any.
            read_body: reads the whole request body.
            header_key: the ``Idempotency-Key`` header, already checked (see
                :data:`~conveyor.limits.IDEMPOTENCY_KEY_MAX`).

        Raises:
            HTTPException: 415, or 413 from the body limit while reading.
            ConveyorError: invalid submission, full queue, store unavailable.
        """
        payload = await read_json_body(content_type, read_body)
        submission = parse_submission(payload, "the request body", ("body",))
        result = await self.submit(submission, idempotency_key(header_key, submission))
        job = result.job
        return JSONResponse(
            render_accepted(job),
            status_code=202 if result.created else 200,
            headers={"Location": f"{scope.get('root_path', '')}/api/v1/jobs/{job.id}"},
        )
