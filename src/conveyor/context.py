"""``current_job()``: what a running task can learn about, and report on, its job."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from conveyor.job import Job

ProgressSink = Callable[[str, int, int], Coroutine[Any, Any, bool]]


@dataclass(slots=True)
class JobContext:
    """The job a task is running for. Get it with :func:`current_job`.

    Attributes:
        job: the job's record as it was when the attempt started.
    """

    job: Job
    _sink: ProgressSink
    _loop: asyncio.AbstractEventLoop

    @property
    def id(self) -> str:
        """The job's id."""
        return self.job.id

    @property
    def attempt(self) -> int:
        """This attempt's number, starting at 1."""
        return self.job.attempts

    async def set_progress(self, progress: int) -> None:
        """Record progress (0-100); shown by the API, the event stream and the dashboard."""
        await self._sink(self.job.id, self.job.attempts, _clamp(progress))

    def set_progress_nowait(self, progress: int) -> None:
        """Record progress from a thread-mode task (or any thread) without waiting."""
        coro = self._sink(self.job.id, self.job.attempts, _clamp(progress))
        asyncio.run_coroutine_threadsafe(coro, self._loop)


def _clamp(progress: int) -> int:
    return max(0, min(100, int(progress)))


_current: ContextVar[JobContext | None] = ContextVar("conveyor_current_job", default=None)


def current_job() -> JobContext:
    """Return the context of the job this code runs for.

    Raises:
        RuntimeError: called outside a task run by a worker (or in a process-mode task).
    """
    ctx = _current.get()
    if ctx is None:
        raise RuntimeError("current_job() is only available inside a task run by a worker")
    return ctx


def running_job() -> Job | None:
    """The job whose task runs in this context, if any (for log records)."""
    ctx = _current.get()
    return None if ctx is None else ctx.job


def set_current(ctx: JobContext | None) -> None:
    """Bind the job context for the running task (worker use)."""
    _current.set(ctx)
