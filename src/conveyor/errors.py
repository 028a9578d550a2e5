"""Conveyor's exceptions, all rooted at :class:`ConveyorError`.

::

    ConveyorError
    ├── ConfigurationError          bad URL, setting or APP path
    ├── SerializationError          a value that is not JSON
    │   └── ResultTooLargeError     a result over CONVEYOR_MAX_RESULT_BYTES
    ├── ValidationError             input the edge refuses
    │   ├── UnknownTaskError        no task registered under that name
    │   └── InvalidArgumentsError   arguments the task cannot take
    ├── JobNotFoundError
    ├── ConflictError               the job is in the wrong state for the request
    ├── QueueFullError              a queue at its maximum length
    ├── HistoryTruncatedError       events after a reader's cursor are past retention
    ├── BackendError                the store failed
    │   └── BackendUnavailableError the store cannot be reached
    ├── OutcomeStoreError           a worker cannot store outcomes and stops
    ├── LostLeadershipError         a leader lease ran out (scheduler, webhooks)
    ├── BenchmarkError              a benchmark whose figures cannot be trusted
    ├── JobTimeoutError             waiting for a result took too long
    ├── JobFailedError              the awaited job failed
    └── JobCancelledError           the awaited job was cancelled

Signals raised *by task code* to steer the worker:

    Retry(delay=...)                run again later, counting an attempt
    NonRetryableError               fail at once, skipping the remaining retries
"""

from __future__ import annotations

from typing import Any


class ConveyorError(Exception):
    """Base class of every error Conveyor raises."""


class ConfigurationError(ConveyorError):
    """A URL, setting or application path that cannot be used."""


class SerializationError(ConveyorError):
    """A value that cannot be carried as JSON."""


class ResultTooLargeError(SerializationError):
    """A task's result whose JSON is larger than the store takes
    (``CONVEYOR_MAX_RESULT_BYTES``); its job fails without retrying.

    Args:
        what: the value, as messages name it ("result of task 'report'").
        size: the size of its JSON, in bytes.
        limit: the most bytes allowed.
    """

    def __init__(self, what: str, size: int, limit: int) -> None:
        super().__init__(
            f"{what} is {size:,} bytes of JSON, over the limit of {limit:,} "
            "(CONVEYOR_MAX_RESULT_BYTES); store large outputs elsewhere and return a "
            "reference to them"
        )
        self.size = size
        self.limit = limit


class ValidationError(ConveyorError):
    """Input refused at the edge, before anything is stored.

    Args:
        message: what is wrong, in words a caller can act on.
        details: machine-readable context (field names, limits).
    """

    code = "VALIDATION_ERROR"

    def __init__(self, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or {}


class UnknownTaskError(ValidationError):
    """No task is registered under the requested name."""

    code = "UNKNOWN_TASK"


class InvalidArgumentsError(ValidationError):
    """Arguments that the task's signature cannot take."""


class JobNotFoundError(ConveyorError):
    """No job with that id exists (or it has expired)."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id!r} not found")
        self.job_id = job_id


class ConflictError(ConveyorError):
    """The job's state does not allow the request (cancel a finished job, ...)."""


class QueueFullError(ConveyorError):
    """The queue holds its maximum number of pending jobs."""

    def __init__(self, queue: str, retry_after: float = 1.0) -> None:
        super().__init__(f"queue {queue!r} is full")
        self.queue = queue
        self.retry_after = retry_after


class HistoryTruncatedError(ConveyorError):
    """Events after a reader's cursor were trimmed from the event feed (retention).

    Raised by ``read_events`` so that a reader that fell that far behind learns it
    instead of skipping the lost events silently; read on with ``allow_gap=True``.

    Args:
        after: the cursor the reader gave.
        oldest: the id of the oldest event still held after it (None: none is held).
        oldest_at: that event's time (seconds since the epoch), when there is one.
        lost: how many events were trimmed after the cursor, when the store knows.
    """

    def __init__(
        self,
        after: str,
        oldest: str | None,
        oldest_at: float | None = None,
        lost: int | None = None,
    ) -> None:
        what = "events" if lost is None else f"{lost} events"
        super().__init__(
            f"{what} after {after!r} were trimmed from the event feed; "
            f"the oldest held is {oldest!r}"
        )
        self.after = after
        self.oldest = oldest
        self.oldest_at = oldest_at
        self.lost = lost


class BackendError(ConveyorError):
    """The store failed to carry out an operation."""


class BackendUnavailableError(BackendError):
    """The store cannot be reached; the operation may be retried later."""


class LostLeadershipError(ConveyorError):
    """A leader lease ran out while its holder acted; the next leader takes over."""


class OutcomeStoreError(ConveyorError):
    """A worker cannot store the outcomes of the jobs it ran, and stops.

    Its jobs are handed out again once their leases expire. The cause is chained.
    """


class BenchmarkError(ConveyorError):
    """``conveyor bench`` found a reason not to report its figures (a job that failed, ran
    twice or went missing; a store that is not durable)."""


class JobTimeoutError(ConveyorError, TimeoutError):
    """A job did not finish within the time a caller was willing to wait."""


class JobFailedError(ConveyorError):
    """The awaited job ended in ``failed``; ``error`` holds the stored error."""

    def __init__(self, job_id: str, error: dict[str, Any] | None) -> None:
        message = (error or {}).get("message", "job failed")
        super().__init__(f"job {job_id} failed: {message}")
        self.job_id = job_id
        self.error = error


class JobCancelledError(ConveyorError):
    """The awaited job was cancelled."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"job {job_id} was cancelled")
        self.job_id = job_id


class Retry(Exception):
    """Raised by task code to run the job again later.

    Args:
        delay: seconds to wait before the next attempt; ``None`` uses the task's backoff.
    """

    def __init__(self, delay: float | None = None) -> None:
        super().__init__(f"retry requested (delay={delay})")
        self.delay = delay


class NonRetryableError(Exception):
    """Raised (or subclassed) by task code for failures that retrying cannot fix."""
