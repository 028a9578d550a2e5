"""Child processes for ``mode="process"`` tasks, one job at a time each.

``concurrent.futures.ProcessPoolExecutor`` cannot stop one running call, so timeouts and
cancellation could not be honoured; here each child is ours to kill. A killed child is
replaced on the next job. Children are started with the ``spawn`` method (no copy of the
worker's threads and sockets) and load the app by its spec, so task code is imported, never
sent. Requests are JSON; a reply is ``+`` and the result's JSON (encoded and measured
once, in the child), or ``-`` and a JSON error.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import inspect
import multiprocessing
import multiprocessing.connection
import signal
from multiprocessing.process import BaseProcess
from typing import Any

from conveyor.errors import (
    ConfigurationError,
    NonRetryableError,
    ResultTooLargeError,
    SerializationError,
)
from conveyor.results import encode_result
from conveyor.serialization import dumps, loads


class ChildError(Exception):
    """An exception raised by task code in a child, carried back as data; ``reason`` is
    the failure's reason (``exception``, ``serialization``, ``result_too_large``)."""

    def __init__(
        self, exception_type: str, message: str, retryable: bool, reason: str = "exception"
    ) -> None:
        super().__init__(message)
        self.exception_type = exception_type
        self.retryable = retryable
        self.reason = reason


class ChildDiedError(Exception):
    """The child exited (crash, OOM kill, ``os._exit``) before answering."""


def _resolve(app_spec: str | None, task_name: str, module: str, qualname: str) -> Any:
    if app_spec is not None:
        from conveyor.loader import load_app

        return load_app(app_spec).get_task(task_name).fn
    obj: Any = importlib.import_module(module)
    for part in qualname.split("."):
        obj = getattr(obj, part)
    return getattr(obj, "fn", obj)


def _child_main(
    conn: multiprocessing.connection.Connection, app_spec: str | None, max_result_bytes: int
) -> None:
    # The parent decides when a child stops; Ctrl-C in the terminal must not kill it
    # mid-job before the parent has drained.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    cache: dict[str, Any] = {}
    while True:
        try:
            request = loads(conn.recv_bytes())
        except EOFError:
            return
        try:
            key = request["task"]
            fn = cache.get(key)
            if fn is None:
                fn = cache[key] = _resolve(app_spec, key, request["module"], request["qualname"])
            result = fn(*request["args"], **request["kwargs"])
            if inspect.isawaitable(result):
                result = asyncio.run(_await(result))
        except BaseException as exc:  # report everything; the child must keep serving
            reply = _error_reply(exc, retryable=not isinstance(exc, NonRetryableError))
        else:
            what = f"result of task {request['task']!r}"
            try:
                reply = b"+" + encode_result(result, limit=max_result_bytes, what=what)
            except ResultTooLargeError as exc:  # another attempt would return the same
                reply = _error_reply(exc, retryable=False, reason="result_too_large")
            except SerializationError as exc:
                reply = _error_reply(exc, retryable=False, reason="serialization")
        conn.send_bytes(reply)


def _error_reply(exc: BaseException, *, retryable: bool, reason: str = "exception") -> bytes:
    return b"-" + dumps(
        {
            "type": f"{type(exc).__module__}.{type(exc).__qualname__}",
            "message": str(exc) or type(exc).__name__,
            "retryable": retryable,
            "reason": reason,
        }
    )


async def _await(awaitable: Any) -> Any:
    return await awaitable


class _Child:
    __slots__ = ("conn", "process")

    def __init__(self, process: BaseProcess, conn: multiprocessing.connection.Connection) -> None:
        self.process = process
        self.conn = conn

    def kill(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.process.kill()
        self.conn.close()


class ProcessPool:
    """Runs calls in up to ``size`` child processes.

    Args:
        size: the most children alive at once.
        app_spec: how children load the app (``module:attr`` or ``file.py:attr``);
            without it, task functions are imported from their defining module.
        max_result_bytes: the largest result (bytes of JSON) a child sends back; a
            larger one fails in the child, so it never crosses the pipe.
    """

    def __init__(self, size: int, app_spec: str | None, max_result_bytes: int = 1_048_576) -> None:
        self._size = size
        self._spec = app_spec
        self._max_result_bytes = max_result_bytes
        self._ctx = multiprocessing.get_context("spawn")
        self._idle: list[_Child] = []
        self._busy: set[_Child] = set()
        self._slots = asyncio.Semaphore(size)
        self._reapers: set[asyncio.Future[None]] = set()
        self.restarts = 0

    async def run(
        self, task_name: str, fn: Any, args: list[Any], kwargs: dict[str, Any]
    ) -> tuple[Any, bytes]:
        """Run ``fn(*args, **kwargs)`` in a child; return its result and the result's JSON.

        Cancelling the caller (timeout, job cancelled, shutdown) kills the child.

        Raises:
            ChildError: the task raised, or its result could not be sent (no JSON form,
                too large); type, message and reason are attached.
            ChildDiedError: the child died before answering.
        """
        module, qualname = fn.__module__, fn.__qualname__
        if self._spec is None and module == "__main__":
            raise ConfigurationError(
                f"process task {task_name!r} is defined in __main__; define it in an "
                "importable module or run the worker with an APP spec"
            )
        request = dumps(
            {
                "task": task_name,
                "module": module,
                "qualname": qualname,
                "args": args,
                "kwargs": kwargs,
            },
            what="arguments",
        )
        async with self._slots:
            child = self._idle.pop() if self._idle else self._spawn()
            self._busy.add(child)
            healthy = False
            try:
                child.conn.send_bytes(request)
                reply = await self._receive(child)
                healthy = True
            finally:
                self._busy.discard(child)
                if healthy:
                    self._idle.append(child)
                else:
                    self._discard(child)
        if reply[:1] == b"+":
            encoded = reply[1:]
            return loads(encoded), encoded
        error = loads(reply[1:])
        raise ChildError(error["type"], error["message"], error["retryable"], error["reason"])

    def _discard(self, child: _Child) -> None:
        """Kill a child that timed out, was cancelled or died, and reap it in the background."""
        child.kill()
        self.restarts += 1
        reaper = asyncio.get_running_loop().run_in_executor(None, child.process.join, 5)
        self._reapers.add(reaper)
        reaper.add_done_callback(self._reapers.discard)

    def _spawn(self) -> _Child:
        parent_conn, child_conn = self._ctx.Pipe(duplex=True)
        process = self._ctx.Process(
            target=_child_main,
            args=(child_conn, self._spec, self._max_result_bytes),
            name="conveyor-process-task",
            daemon=True,
        )
        process.start()
        child_conn.close()
        return _Child(process, parent_conn)

    async def _receive(self, child: _Child) -> bytes:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        fd = child.conn.fileno()

        def on_readable() -> None:
            if not ready.done():
                ready.set_result(None)

        loop.add_reader(fd, on_readable)
        try:
            await ready
        finally:
            loop.remove_reader(fd)
        try:
            data = child.conn.recv_bytes()
        except (EOFError, OSError):
            raise ChildDiedError(
                f"process exited with code {child.process.exitcode}"
                if child.process.exitcode is not None
                else "process closed its pipe"
            ) from None
        return data

    async def aclose(self) -> None:
        """Stop every child (busy ones are killed)."""
        children = [*self._idle, *self._busy]
        self._idle.clear()
        self._busy.clear()
        for child in children:
            child.kill()
        for child in children:
            await asyncio.to_thread(child.process.join, 5)
        if self._reapers:
            await asyncio.gather(*self._reapers, return_exceptions=True)
