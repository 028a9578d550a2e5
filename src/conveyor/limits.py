"""The limits on what a job, a queue and a task may be, named once.

The Python API checks them with the functions here; the HTTP models take the same
constants (and :data:`QUEUE_PATTERN`), so both edges refuse the same things.
"""

from __future__ import annotations

from conveyor.errors import ValidationError

#: The longest queue name: names appear in URLs and store keys.
QUEUE_NAME_MAX = 100
#: A queue name in a URL or a body: no '/', no control characters, no whitespace at
#: either end (``"default "`` is not another queue). :func:`check_queue` is the rule;
#: this pattern is what the OpenAPI document shows of it.
QUEUE_PATTERN = r"^[^\s/\x00-\x1f\x7f](?:[^/\x00-\x1f\x7f]*[^\s/\x00-\x1f\x7f])?$"
#: The longest task name.
TASK_NAME_MAX = 200
#: The longest idempotency key.
IDEMPOTENCY_KEY_MAX = 255
#: Priorities run from -PRIORITY_MAX to PRIORITY_MAX.
PRIORITY_MAX = 1_000_000
#: The most retries a job may have.
RETRIES_MAX = 1000
#: The longest attempt timeout: a year, in seconds.
TIMEOUT_MAX = 31_536_000.0


def check_queue(queue: str) -> None:
    """Refuse a queue name that is empty, too long, not printable, holds '/' or has
    whitespace at either end.

    Raises:
        ValidationError: naming the field ``queue``.
    """
    if (
        not queue
        or len(queue) > QUEUE_NAME_MAX
        or not queue.isprintable()
        or "/" in queue
        or queue != queue.strip()
    ):
        raise ValidationError(
            f"queue must be 1-{QUEUE_NAME_MAX} printable characters without '/' and without "
            "whitespace at either end",
            {"field": "queue"},
        )


def check_task_name(name: str, field: str = "type") -> None:
    """Refuse an empty or over-long task name."""
    if not name or len(name) > TASK_NAME_MAX:
        raise ValidationError(f"task name must be 1-{TASK_NAME_MAX} characters", {"field": field})


def check_priority(priority: int | None) -> None:
    """Refuse a priority outside ±:data:`PRIORITY_MAX`."""
    if priority is not None and not -PRIORITY_MAX <= priority <= PRIORITY_MAX:
        raise ValidationError(f"priority must be within ±{PRIORITY_MAX:,}", {"field": "priority"})


def check_idempotency_key(key: str | None) -> None:
    """Refuse an empty or over-long idempotency key."""
    if key is not None and not 0 < len(key) <= IDEMPOTENCY_KEY_MAX:
        raise ValidationError(
            f"idempotency key must be 1-{IDEMPOTENCY_KEY_MAX} characters",
            {"field": "idempotencyKey"},
        )


def check_retries(retries: int) -> None:
    """Refuse a retry budget outside 0..:data:`RETRIES_MAX`."""
    if not 0 <= retries <= RETRIES_MAX:
        raise ValidationError(
            f"retries must be between 0 and {RETRIES_MAX}", {"field": "maxRetries"}
        )


def check_timeout(timeout: float | None) -> None:
    """Refuse a timeout that is not positive or is over :data:`TIMEOUT_MAX`."""
    if timeout is not None and not 0 < timeout <= TIMEOUT_MAX:
        raise ValidationError("timeout must be positive (seconds)", {"field": "timeout"})
