"""The application object: settings, the task registry and the store.

Creating a :class:`Conveyor` does no I/O; the store is opened on first use.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar, overload

from typing_extensions import Unpack

from conveyor.backends import backend_from_url
from conveyor.backends.base import (
    Backend,
    EnqueueResult,
    MisfirePolicy,
    OverlapPolicy,
    Retention,
    Schedule,
)
from conveyor.errors import ConfigurationError, UnknownTaskError, ValidationError
from conveyor.job import Job, JobHandle
from conveyor.limits import check_queue
from conveyor.settings import Settings
from conveyor.task import (
    JobOptionArgs,
    JobOptions,
    Mode,
    Task,
    TaskOptions,
    make_job_options,
    new_job,
)

P = ParamSpec("P")
R = TypeVar("R")
T = TypeVar("T")

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class QueueOptions:
    """Options of one queue, declared in code with :meth:`Conveyor.queue`.

    Args:
        name: the queue.
        max_length: the most pending and scheduled jobs it may hold (None: no limit);
            submissions past it are refused with ``QueueFullError`` (HTTP 429).
    """

    name: str
    max_length: int | None = None


class Conveyor:
    """A task queue application.

    Args:
        url: the store (``memory://``, ``sqlite:///path.db``, ``redis://host:port/db``);
            defaults to ``CONVEYOR_URL``, then ``sqlite:///./conveyor.db``.
        settings: all other settings; read from ``CONVEYOR_*`` variables when omitted.

    Example::

        app = Conveyor()

        @app.task(retries=5, timeout=30)
        async def fetch(url: str) -> int: ...

        job = await fetch.enqueue("https://example.com")
        print(await job.result(timeout=10))
    """

    def __init__(self, url: str | None = None, *, settings: Settings | None = None) -> None:
        base = settings if settings is not None else Settings.from_env()
        self.settings = base.replace(url=url) if url else base
        self.tasks: dict[str, Task[Any, Any]] = {}
        #: Schedules declared with :meth:`cron` and :meth:`every`, by id.
        self.schedules: dict[str, Schedule] = {}
        #: Queue options declared with :meth:`queue`, pushed to the store at start.
        self.queue_options: dict[str, QueueOptions] = {}
        #: ``module:attribute`` or ``path.py:attribute`` this app was loaded from, so that
        #: process-mode children can load the same app.
        self.spec: str | None = None
        self._backends: dict[int, tuple[asyncio.AbstractEventLoop, Backend]] = {}
        self._opening: dict[int, asyncio.Future[Backend]] = {}
        self._shared: Backend | None = None
        self._open_lock = threading.Lock()
        self._portal: tuple[asyncio.AbstractEventLoop, threading.Thread] | None = None

    def __repr__(self) -> str:
        return f"<Conveyor url={self.url!r} tasks={len(self.tasks)}>"

    @property
    def url(self) -> str:
        """The store URL."""
        return self.settings.url

    @property
    def retention(self) -> Retention:
        """How long the store keeps finished jobs and events (from the settings)."""
        s = self.settings
        return Retention(result_ttl=s.result_ttl_seconds, events=s.event_retention_seconds)

    # -- tasks -----------------------------------------------------------------------
    @overload
    def task(self, fn: Callable[P, Awaitable[R]], /) -> Task[P, R]: ...
    @overload
    def task(self, fn: Callable[P, R], /) -> Task[P, R]: ...
    @overload
    def task(
        self,
        fn: None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        retries: int = 3,
        timeout: float | None = None,
        mode: Mode | None = None,
        priority: int = 0,
        backoff: float = 1.0,
        backoff_max: float = 300.0,
        non_retryable: Sequence[type[BaseException]] = (),
    ) -> Callable[[Callable[P, R]], Task[P, Any]]: ...

    def task(
        self,
        fn: Callable[..., Any] | None = None,
        /,
        *,
        name: str | None = None,
        queue: str = "default",
        retries: int = 3,
        timeout: float | None = None,
        mode: Mode | None = None,
        priority: int = 0,
        backoff: float = 1.0,
        backoff_max: float = 300.0,
        non_retryable: Sequence[type[BaseException]] = (),
    ) -> Any:
        """Register a function as a task (``@app.task`` or ``@app.task(...)``).

        Args:
            name: the task's type name; defaults to the function's ``__name__``.
            queue: the queue its jobs go to.
            retries: retries after the first failed attempt.
            timeout: seconds an attempt may run.
            mode: ``async`` (on the event loop), ``thread`` (a thread pool) or
                ``process`` (a child process). Defaults to ``async`` for coroutine
                functions and ``thread`` for plain functions.
            priority: default priority; higher runs first within a queue.
            backoff: first retry delay in seconds (doubles per attempt, full jitter).
            backoff_max: the cap on one retry delay.
            non_retryable: exception classes that fail the job without retrying.
        """

        def register(func: Callable[..., Any]) -> Task[Any, Any]:
            is_async = inspect.iscoroutinefunction(func)
            chosen: Mode = mode or ("async" if is_async else "thread")
            if chosen == "async" and not is_async:
                raise ValidationError(
                    f"task {func.__name__!r} is a plain function; use mode='thread' or "
                    "mode='process', or make it `async def`"
                )
            if chosen == "thread" and is_async:
                raise ValidationError(
                    f"task {func.__name__!r} is `async def`; it runs on the event loop, "
                    "mode='thread' is for blocking functions"
                )
            options = TaskOptions(
                name=name or func.__name__,
                queue=queue,
                retries=retries,
                timeout=timeout,
                mode=chosen,
                priority=priority,
                backoff=backoff,
                backoff_max=backoff_max,
                non_retryable=tuple(non_retryable),
            )
            if options.name in self.tasks:
                raise ConfigurationError(f"a task named {options.name!r} is already registered")
            task: Task[Any, Any] = Task(self, func, options)
            self.tasks[options.name] = task
            return task

        if fn is not None:
            return register(fn)
        return register

    def cron(
        self,
        expression: str,
        *,
        timezone: str = "UTC",
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        jitter: float = 0.0,
        misfire_policy: MisfirePolicy | str = MisfirePolicy.RUN_ONCE,
        max_drift: float = 3600.0,
        overlap: OverlapPolicy | str = OverlapPolicy.ALLOW,
        enabled: bool = True,
        **task_options: Any,
    ) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
        """Run a function on a cron schedule: ``@app.cron("*/30 * * * * *")``.

        Registers the function as a task (``task_options`` go to :meth:`task`) and
        declares a schedule whose id is ``name``, else the task's name. Scheduler
        replicas store it when they start; see ``docs/scheduling.md``.

        Args:
            expression: 5 fields, or 6 with seconds first, or an ``@hourly`` macro.
            timezone: the IANA zone the expression is read in.
            name: the schedule id (and the task name when this registers the task).
            queue: the queue its jobs go to (default: the task's).
            priority: its jobs' priority (default: the task's).
            args: positional arguments of every fire's job.
            kwargs: keyword arguments of every fire's job.
            jitter: delay each fire's job by up to this many seconds (spreads load).
            misfire_policy: ``run_once`` (after downtime, fire once for the missed
                times) or ``skip``.
            max_drift: ``run_once`` makes up only for fires missed within this many
                seconds.
            overlap: ``skip`` does not fire while the previous job is pending or running.
            enabled: whether it fires when first stored.

        Raises:
            ValidationError: at decoration time, for an invalid expression, zone or
                arguments.
        """
        from conveyor.scheduling.declare import declare

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            return declare(
                self, fn, cron=expression, interval=None, timezone=timezone, name=name,
                queue=queue, priority=priority, args=args, kwargs=kwargs, jitter=jitter,
                misfire_policy=misfire_policy, max_drift=max_drift, overlap=overlap,
                enabled=enabled, task_options=task_options,
            )  # fmt: skip

        return register

    def every(
        self,
        seconds: float,
        *,
        name: str | None = None,
        queue: str | None = None,
        priority: int | None = None,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        jitter: float = 0.0,
        misfire_policy: MisfirePolicy | str = MisfirePolicy.RUN_ONCE,
        max_drift: float = 3600.0,
        overlap: OverlapPolicy | str = OverlapPolicy.ALLOW,
        enabled: bool = True,
        **task_options: Any,
    ) -> Callable[[Callable[..., Any]], Task[Any, Any]]:
        """Run a function every ``seconds`` (at least 0.1): ``@app.every(60)``.

        Fires sit on a grid anchored when the schedule is first stored. Arguments as
        for :meth:`cron`.
        """
        from conveyor.scheduling.declare import declare

        def register(fn: Callable[..., Any]) -> Task[Any, Any]:
            return declare(
                self, fn, cron=None, interval=seconds, timezone="UTC", name=name,
                queue=queue, priority=priority, args=args, kwargs=kwargs, jitter=jitter,
                misfire_policy=misfire_policy, max_drift=max_drift, overlap=overlap,
                enabled=enabled, task_options=task_options,
            )  # fmt: skip

        return register

    def get_task(self, name: str) -> Task[Any, Any]:
        """Return the task registered under ``name``.

        Raises:
            UnknownTaskError: there is none.
        """
        try:
            return self.tasks[name]
        except KeyError:
            raise UnknownTaskError(
                f"unknown task type {name!r}", {"type": name, "known": sorted(self.tasks)}
            ) from None

    # -- queues ----------------------------------------------------------------------
    def declared_queues(self) -> list[str]:
        """Every queue named in code: ``default``, then those of the tasks, the
        schedules and :meth:`queue`, in order of first mention.

        A worker given no queues consumes these, so no job the app itself can make
        waits on a queue nobody reads.
        """
        names = ["default"]
        names += (task.options_.queue for task in self.tasks.values())
        names += (s.queue for s in self.schedules.values() if s.queue is not None)
        names += self.queue_options
        return list(dict.fromkeys(names))

    def queue(self, name: str, *, max_length: int | None = None) -> QueueOptions:
        """Declare a queue's options in code.

        API and worker processes push them to the store when they start (see
        :meth:`configure_queues`), so every process agrees on them. Declaring
        ``max_length=None`` clears a limit set earlier.

        Raises:
            ValidationError: an invalid name (see :func:`conveyor.limits.check_queue`).
            ConfigurationError: a negative ``max_length``.
        """
        check_queue(name)
        if max_length is not None and max_length < 0:
            raise ConfigurationError(f"max_length of queue {name!r} must not be negative")
        options = QueueOptions(name, max_length)
        self.queue_options[name] = options
        return options

    async def configure_queues(self) -> None:
        """Push the queue options declared with :meth:`queue` to the store.

        Raises:
            BackendError: the store failed.
        """
        if not self.queue_options:
            return
        backend = await self.backend()
        for options in self.queue_options.values():
            await backend.configure_queue(options.name, max_length=options.max_length)
        logger.info("configured queues %s", sorted(self.queue_options))

    # -- the store -------------------------------------------------------------------
    async def backend(self) -> Backend:
        """Return this event loop's opened store connection, opening it on first use.

        Each event loop gets its own connection (drivers bind to a loop); the in-memory
        store is one object shared by all. Concurrent first calls share one opening.
        """
        loop = asyncio.get_running_loop()
        entry = self._backends.get(id(loop))
        if entry is not None and entry[0] is loop:
            return entry[1]
        opening = self._opening.get(id(loop))
        if opening is not None and not opening.done():
            return await asyncio.shield(opening)
        future: asyncio.Future[Backend] = loop.create_future()
        self._opening[id(loop)] = future
        try:
            with self._open_lock:
                if self.url.startswith("memory:"):
                    if self._shared is None:
                        self._shared = backend_from_url(self.url, self.retention)
                    backend = self._shared
                else:
                    backend = backend_from_url(self.url, self.retention)
            await backend.open()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: waiters re-raise it, nobody else must
            raise
        finally:
            del self._opening[id(loop)]
        # The loop object is kept with its connection: ids of closed loops are reused.
        self._backends[id(loop)] = (loop, backend)
        future.set_result(backend)
        return backend

    async def release_backend(self) -> None:
        """Close this event loop's store connection (for loops that end before the app)."""
        entry = self._backends.pop(id(asyncio.get_running_loop()), None)
        if entry is not None and entry[1] is not self._shared:
            await entry[1].aclose()

    async def enqueue_jobs(self, jobs: Sequence[Job]) -> list[EnqueueResult]:
        """Store ready-built jobs in one round trip (see :meth:`Task.build_job`)."""
        if not jobs:
            return []
        backend = await self.backend()
        return await backend.enqueue(jobs, idempotency_ttl=self.settings.idempotency_ttl_seconds)

    def job_by_name(
        self,
        type: str,
        args: Sequence[Any],
        kwargs: dict[str, Any],
        options: JobOptions,
        *,
        bound: bool = False,
    ) -> Job:
        """The pending job of a call by task name (not yet stored): the one path of the
        HTTP API, the WebSocket and the CLI.

        Args:
            bound: the arguments are already checked and in stored form (the API's
                parameter checker binds them); else they are bound here.

        Raises:
            UnknownTaskError, InvalidArgumentsError, SerializationError
        """
        task = self.get_task(type)
        if bound:
            stored_args, stored_kwargs = list(args), dict(kwargs)
        else:
            stored_args, stored_kwargs = task.bind(args, kwargs)
        return new_job(task.name, task.options_, stored_args, stored_kwargs, options, time.time())

    async def submit(
        self,
        type: str,
        args: Sequence[Any] = (),
        kwargs: dict[str, Any] | None = None,
        **options: Unpack[JobOptionArgs],
    ) -> EnqueueResult:
        """Enqueue a job by task name, as the CLI does (see :meth:`job_by_name`).

        ``options`` are those of :meth:`Task.options`.

        Raises:
            UnknownTaskError, InvalidArgumentsError, SerializationError, ValidationError
        """
        job = self.job_by_name(type, args, kwargs or {}, make_job_options(**options))
        (result,) = await self.enqueue_jobs([job])
        return result

    def job(self, job_id: str) -> JobHandle[Any]:
        """A handle on an existing job."""
        return JobHandle(self, job_id)

    # -- sync bridge -----------------------------------------------------------------
    def run_sync(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run a coroutine on this app's background loop from synchronous code."""
        with self._open_lock:
            if self._portal is None:
                loop = asyncio.new_event_loop()
                thread = threading.Thread(
                    target=loop.run_forever, name="conveyor-sync", daemon=True
                )
                thread.start()
                self._portal = (loop, thread)
            loop = self._portal[0]
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    async def aclose(self) -> None:
        """Close store connections opened by this app."""
        backends, self._backends = self._backends, {}
        portal = self._portal
        current = asyncio.get_running_loop()
        for loop, backend in backends.values():
            if loop is not current and loop.is_running():
                # Drivers bound to another running loop (the sync bridge) close there.
                closing = asyncio.run_coroutine_threadsafe(backend.aclose(), loop)
                try:
                    await asyncio.wrap_future(closing)
                except asyncio.CancelledError:
                    task = asyncio.current_task()
                    if task is not None and task.cancelling():
                        raise
                    # That loop ended before it ran the close (a heartbeat thread that
                    # stopped meanwhile): its thread released the connection itself.
            else:
                await backend.aclose()
        if portal is not None:
            portal[0].call_soon_threadsafe(portal[0].stop)
            portal[1].join(timeout=5)
            portal[0].close()
            self._portal = None

    async def __aenter__(self) -> Conveyor:
        await self.backend()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()
