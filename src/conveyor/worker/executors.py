"""Running one attempt of a job: on the loop, in a thread, or in a child process."""

from __future__ import annotations

import asyncio
import contextvars
import functools
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from conveyor.job import Job
from conveyor.task import Task
from conveyor.worker.process_pool import ProcessPool


class Executors:
    """The three ways a task can run; thread and process pools start on first use.

    Args:
        threads: the most thread-mode tasks running at once.
        processes: the most process-mode tasks running at once.
        app_spec: how process children load the app.
    """

    def __init__(self, *, threads: int, processes: int, app_spec: str | None) -> None:
        self._threads = threads
        self._processes = processes
        self._spec = app_spec
        self._thread_pool: ThreadPoolExecutor | None = None
        self._process_pool: ProcessPool | None = None

    async def run(self, task: Task[Any, Any], job: Job) -> Any:
        """Run one attempt. Cancelling the caller stops async and process tasks."""
        mode = task.options_.mode
        if mode == "async":
            return await task.fn(*job.args, **job.kwargs)
        if mode == "thread":
            if self._thread_pool is None:
                self._thread_pool = ThreadPoolExecutor(self._threads, "conveyor-task")
            # Copy the context so current_job() works inside the thread.
            call = functools.partial(
                contextvars.copy_context().run, task.fn, *job.args, **job.kwargs
            )
            return await asyncio.get_running_loop().run_in_executor(self._thread_pool, call)
        if self._process_pool is None:
            self._process_pool = ProcessPool(self._processes, self._spec)
        return await self._process_pool.run(task.name, task.fn, job.args, job.kwargs)

    async def aclose(self) -> None:
        if self._thread_pool is not None:
            # Threads cannot be interrupted; do not wait for ones still running.
            self._thread_pool.shutdown(wait=False, cancel_futures=True)
            self._thread_pool = None
        if self._process_pool is not None:
            await self._process_pool.aclose()
            self._process_pool = None
