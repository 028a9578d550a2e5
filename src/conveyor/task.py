"""Tasks: functions registered with an app, and how callers enqueue them."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Generic, Literal, ParamSpec, TypedDict, TypeVar

from typing_extensions import Unpack

from conveyor.errors import InvalidArgumentsError, ValidationError
from conveyor.job import Job, JobHandle, new_job_id
from conveyor.limits import (
    check_idempotency_key,
    check_priority,
    check_queue,
    check_retries,
    check_task_name,
    check_timeout,
)
from conveyor.serialization import dumps

if TYPE_CHECKING:
    from conveyor.app import Conveyor

P = ParamSpec("P")
R = TypeVar("R")

Mode = Literal["async", "thread", "process"]
MODES: tuple[Mode, ...] = ("async", "thread", "process")


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How a task runs. Every field but ``name`` and ``mode`` can be overridden per job.

    Attributes:
        retries: how many times a failed attempt is retried (attempts = retries + 1).
        timeout: seconds an attempt may run; ``None`` for no limit.
        backoff: first retry delay in seconds; doubles each attempt, with full jitter.
        backoff_max: the cap on one retry delay.
        non_retryable: exception classes that fail the job at once.
    """

    name: str
    queue: str = "default"
    retries: int = 3
    timeout: float | None = None
    mode: Mode = "async"
    priority: int = 0
    backoff: float = 1.0
    backoff_max: float = 300.0
    non_retryable: tuple[type[BaseException], ...] = ()

    def __post_init__(self) -> None:
        check_task_name(self.name, "name")
        if self.mode not in MODES:
            raise ValidationError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        check_queue(self.queue)
        check_retries(self.retries)
        check_timeout(self.timeout)
        if self.backoff < 0 or self.backoff_max < 0:
            raise ValidationError("backoff must not be negative")


#: What a job of a task this process does not know gets (a schedule may name a task
#: only newer workers have): no retries, since nothing says it may be retried.
UNKNOWN_TASK = TaskOptions(name="unknown", retries=0)


def new_job(
    type: str,
    defaults: TaskOptions | None,
    args: list[Any],
    kwargs: dict[str, Any],
    opts: JobOptions,
    now: float,
) -> Job:
    """The pending record of one call of task ``type``: ``opts`` over the task's
    ``defaults`` (:data:`UNKNOWN_TASK`'s when None). The one place jobs are built.

    Arguments must be in stored form already (see :meth:`Task.bind`). ``now`` is the
    creation time (0: the store stamps it when it accepts the job).
    """
    o = defaults or UNKNOWN_TASK
    if opts.run_at is not None:
        run_at = opts.run_at
    elif opts.delay:
        run_at = now + opts.delay
    else:
        run_at = now
    return Job(
        id=new_job_id(),
        type=type,
        args=args,
        kwargs=kwargs,
        queue=opts.queue or o.queue,
        priority=o.priority if opts.priority is None else opts.priority,
        max_retries=o.retries if opts.retries is None else opts.retries,
        timeout=o.timeout if opts.timeout is None else opts.timeout,
        created_at=now,
        run_at=run_at,
        idempotency_key=opts.idempotency_key,
        callback_url=opts.callback_url,
        callback_secret=opts.callback_secret,
    )


@dataclass(frozen=True, slots=True)
class JobOptions:
    """Per-job overrides set with :meth:`Task.options`."""

    delay: float | None = None
    run_at: float | None = None
    priority: int | None = None
    idempotency_key: str | None = None
    queue: str | None = None
    retries: int | None = None
    timeout: float | None = None
    callback_url: str | None = None
    callback_secret: str | None = field(default=None, repr=False)


def _seconds(value: float | timedelta | None, name: str) -> float | None:
    if value is None:
        return None
    seconds = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if seconds < 0 or seconds != seconds:
        raise ValidationError(f"{name} must not be negative", {"field": name})
    return seconds


def _instant(value: datetime | float | None) -> float | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError("run_at must be timezone-aware", {"field": "runAt"})
        return value.timestamp()
    return float(value)


class JobOptionArgs(TypedDict, total=False):
    """The per-job options a caller may give (:meth:`Task.options`,
    :meth:`Conveyor.submit`).

    Attributes:
        delay: run no earlier than this long from now (seconds or a ``timedelta``).
        run_at: run no earlier than this instant (tz-aware ``datetime`` or epoch seconds).
        priority: higher runs first within a queue.
        idempotency_key: a second enqueue with this key returns the first job.
        queue: the queue, instead of the task's.
        retries: retries after the first failed attempt, instead of the task's.
        timeout: seconds an attempt may run (or a ``timedelta``), instead of the task's.
        callback_url: where to POST the signed webhook when the job finishes.
        callback_secret: the webhook's HMAC key.
    """

    delay: float | timedelta | None
    run_at: datetime | float | None
    priority: int | None
    idempotency_key: str | None
    queue: str | None
    retries: int | None
    timeout: float | timedelta | None
    callback_url: str | None
    callback_secret: str | None


def make_job_options(
    *,
    delay: float | timedelta | None = None,
    run_at: datetime | float | None = None,
    priority: int | None = None,
    idempotency_key: str | None = None,
    queue: str | None = None,
    retries: int | None = None,
    timeout: float | timedelta | None = None,
    callback_url: str | None = None,
    callback_secret: str | None = None,
) -> JobOptions:
    """Validate and normalize per-job options (durations to seconds, instants to epoch)."""
    if delay is not None and run_at is not None:
        raise ValidationError("give delay or run_at, not both", {"field": "delay"})
    if queue is not None:
        check_queue(queue)
    if retries is not None:
        check_retries(retries)
    timeout_s = _seconds(timeout, "timeout")
    check_timeout(timeout_s)
    check_idempotency_key(idempotency_key)
    check_priority(priority)
    return JobOptions(
        delay=_seconds(delay, "delay"),
        run_at=_instant(run_at),
        priority=priority,
        idempotency_key=idempotency_key,
        queue=queue,
        retries=retries,
        timeout=timeout_s,
        callback_url=callback_url,
        callback_secret=callback_secret,
    )


class Task(Generic[P, R]):
    """A function registered with an app. Calling it runs the function directly;
    :meth:`enqueue` hands it to a worker.

    Build tasks with :meth:`conveyor.Conveyor.task`, not directly.
    """

    def __init__(
        self,
        app: Conveyor,
        fn: Callable[P, Awaitable[R]] | Callable[P, R],
        options: TaskOptions,
    ) -> None:
        self.app = app
        self.fn = fn
        self.options_ = options
        self.name = options.name
        self.signature = inspect.signature(fn)
        self.is_async = inspect.iscoroutinefunction(fn)
        params = self.signature.parameters.values()
        # Arguments are stored by name when the signature allows it, so the API and the
        # dashboard show them as an object and a retry survives a reordered signature.
        self._by_name = all(p.kind not in (p.POSITIONAL_ONLY, p.VAR_POSITIONAL) for p in params)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", options.name)
        self.__qualname__ = getattr(fn, "__qualname__", self.__name__)
        self.__module__ = fn.__module__

    def __repr__(self) -> str:
        return f"<Task {self.name} mode={self.options_.mode} queue={self.options_.queue}>"

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> Awaitable[R] | R:
        return self.fn(*args, **kwargs)

    # -- building jobs ---------------------------------------------------------------
    def bind(self, args: Sequence[Any], kwargs: dict[str, Any]) -> tuple[list[Any], dict[str, Any]]:
        """Check arguments against the signature; return them in stored form.

        Raises:
            InvalidArgumentsError: the function cannot take these arguments.
            SerializationError: an argument is not JSON.
        """
        try:
            bound = self.signature.bind(*args, **kwargs)
        except TypeError as exc:
            raise InvalidArgumentsError(f"task {self.name!r}: {exc}", {"task": self.name}) from None
        stored_args, stored_kwargs = self.stored_form(bound, args, kwargs)
        dumps([stored_args, stored_kwargs], what=f"arguments of task {self.name!r}")
        return stored_args, stored_kwargs

    def stored_form(
        self, bound: inspect.BoundArguments, args: Sequence[Any], kwargs: dict[str, Any]
    ) -> tuple[list[Any], dict[str, Any]]:
        """Arguments (``bound`` from ``args`` and ``kwargs``) as a job keeps them: all by
        name where the signature allows (a worker running a reordered signature still
        binds them right), else as given."""
        if not self._by_name:
            return list(args), dict(kwargs)
        stored_kwargs: dict[str, Any] = {}
        for name, value in bound.arguments.items():
            if self.signature.parameters[name].kind is inspect.Parameter.VAR_KEYWORD:
                stored_kwargs.update(value)
            else:
                stored_kwargs[name] = value
        return [], stored_kwargs

    def build_job(
        self, args: Sequence[Any], kwargs: dict[str, Any], opts: JobOptions, now: float
    ) -> Job:
        """Make the pending job record for one call (not yet stored)."""
        stored_args, stored_kwargs = self.bind(args, kwargs)
        return new_job(self.name, self.options_, stored_args, stored_kwargs, opts, now)

    # -- enqueueing ------------------------------------------------------------------
    def options(self, **options: Unpack[JobOptionArgs]) -> TaskCall[P, R]:
        """Return a call of this task with per-job options (see :class:`JobOptionArgs`),
        ready to enqueue."""
        return TaskCall(self, make_job_options(**options))

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue one job; return its handle once the store has accepted it."""
        return await TaskCall(self, _NO_OPTIONS).enqueue(*args, **kwargs)

    async def enqueue_many(
        self, calls: Iterable[tuple[Sequence[Any], dict[str, Any]]]
    ) -> list[JobHandle[R]]:
        """Enqueue many jobs in one store round trip: ``[(args, kwargs), ...]``."""
        return await TaskCall(self, _NO_OPTIONS).enqueue_many(calls)

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue from synchronous code (Flask, Django, scripts). Blocks until stored."""
        return TaskCall(self, _NO_OPTIONS).enqueue_sync(*args, **kwargs)


_NO_OPTIONS = JobOptions()


class TaskCall(Generic[P, R]):
    """A task with per-job options applied; see :meth:`Task.options`."""

    __slots__ = ("opts", "task")

    def __init__(self, task: Task[P, R], opts: JobOptions) -> None:
        self.task = task
        self.opts = opts

    def options(self, **changes: Unpack[JobOptionArgs]) -> TaskCall[P, R]:
        """Return a copy with more options changed."""
        fresh = self.task.options(**changes).opts
        merged = replace(
            self.opts,
            **{k: getattr(fresh, k) for k in fresh.__slots__ if getattr(fresh, k) is not None},
        )
        return TaskCall(self.task, merged)

    async def enqueue(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue one job with these options."""
        job = self.task.build_job(args, kwargs, self.opts, time.time())
        (result,) = await self.task.app.enqueue_jobs([job])
        return JobHandle(self.task.app, result.job.id, created=result.created)

    async def enqueue_many(
        self, calls: Iterable[tuple[Sequence[Any], dict[str, Any]]]
    ) -> list[JobHandle[R]]:
        """Enqueue many jobs with these options in one store round trip."""
        if self.opts.idempotency_key is not None:
            raise ValidationError("an idempotency key names one job; set it per call")
        now = time.time()
        jobs = [self.task.build_job(args, kwargs, self.opts, now) for args, kwargs in calls]
        results = await self.task.app.enqueue_jobs(jobs)
        return [JobHandle(self.task.app, r.job.id, created=r.created) for r in results]

    def enqueue_sync(self, *args: P.args, **kwargs: P.kwargs) -> JobHandle[R]:
        """Enqueue from synchronous code; blocks until the store has the job."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            pass
        else:
            raise RuntimeError(
                "enqueue_sync() was called from a running event loop; use `await task.enqueue()`"
            )
        job = self.task.build_job(args, kwargs, self.opts, time.time())
        (result,) = self.task.app.run_sync(self.task.app.enqueue_jobs([job]))
        return JobHandle(self.task.app, result.job.id, created=result.created)
