"""The producer side of one system, run inside that system's virtualenv.

``python -m bench.peers.client SYSTEM`` reads one JSON request per line on stdin and
answers one JSON line on the original stdout (library output is sent to stderr):

- ``{"op": "worker", "kind": K, "concurrency": C, "processes": P}`` → the worker command;
- ``{"op": "enqueue_many", "kind": K, "start": N, "count": C, "batch": B}`` → ``seconds``
  to enqueue jobs ``N .. N+C-1`` in batches of ``B`` by the system's bulk path;
- ``{"op": "enqueue_one", ...}`` → the same, one job per call, one after another;
- ``{"op": "steady", "kind": K, "start": N, "rate": R, "seconds": S}`` → jobs sent on an
  absolute schedule of ``R``/s for ``S`` s (a producer that falls behind stops at ``S``
  all the same): ``sent``, ``seconds``, ``end_ns``;
- ``{"op": "quit"}``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import importlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TextIO

from bench.peers.systems.base import Adapter, AsyncAdapter, Call

#: The largest batch one bulk call sends while pacing a steady rate.
STEADY_BATCH = 1000


def batches(start: int, count: int, size: int) -> Iterator[range]:
    """Job numbers ``start .. start+count-1`` in ranges of at most ``size``."""
    for offset in range(start, start + count, size):
        yield range(offset, min(offset + size, start + count))


def calls(numbers: range) -> list[Call]:
    """The arguments of these jobs, stamped with the time they are sent."""
    now = time.time_ns()
    return [(n, now) for n in numbers]


def due(started: float, sent: int, total: int, rate: float) -> tuple[int, float]:
    """How many jobs are due now on an absolute schedule, else how long until the next.

    Job ``k`` is due ``k / rate`` seconds after ``started``, so a late wake-up sends what
    it missed instead of drifting.
    """
    elapsed = time.perf_counter() - started
    count = min(total, int(elapsed * rate) + 1) - sent
    if count > 0:
        return min(count, STEADY_BATCH), 0.0
    return 0, sent / rate - elapsed


class SyncDriver:
    """Requests against a synchronous adapter."""

    def __init__(self, adapter: Adapter) -> None:
        self.adapter = adapter
        adapter.open()

    def enqueue_many(self, kind: str, start: int, count: int, batch: int) -> dict[str, Any]:
        began = time.perf_counter()
        for numbers in batches(start, count, batch):
            self.adapter.enqueue_many(kind, calls(numbers))
        return {"seconds": time.perf_counter() - began}

    def enqueue_one(self, kind: str, start: int, count: int, batch: int) -> dict[str, Any]:
        began = time.perf_counter()
        for n in range(start, start + count):
            self.adapter.enqueue_one(kind, (n, time.time_ns()))
        return {"seconds": time.perf_counter() - began}

    def steady(self, kind: str, start: int, rate: float, seconds: float) -> dict[str, Any]:
        total, sent = int(rate * seconds), 0
        began = time.perf_counter()
        while sent < total and time.perf_counter() - began < seconds:
            count, wait = due(began, sent, total, rate)
            if count:
                self.adapter.enqueue_many(kind, calls(range(start + sent, start + sent + count)))
                sent += count
            else:
                time.sleep(wait)
        return {"sent": sent, "seconds": time.perf_counter() - began, "end_ns": time.time_ns()}

    def close(self) -> None:
        self.adapter.close()


class AsyncDriver:
    """Requests against an asyncio adapter, on one event loop kept for the session."""

    def __init__(self, adapter: AsyncAdapter) -> None:
        self.adapter = adapter
        self.loop = asyncio.new_event_loop()
        self.loop.run_until_complete(adapter.open())

    def _run(self, make: Callable[[], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        async def main() -> dict[str, Any]:
            return await make()

        return self.loop.run_until_complete(main())

    def enqueue_many(self, kind: str, start: int, count: int, batch: int) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            began = time.perf_counter()
            for numbers in batches(start, count, batch):
                await self.adapter.enqueue_many(kind, calls(numbers))
            return {"seconds": time.perf_counter() - began}

        return self._run(go)

    def enqueue_one(self, kind: str, start: int, count: int, batch: int) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            began = time.perf_counter()
            for n in range(start, start + count):
                await self.adapter.enqueue_one(kind, (n, time.time_ns()))
            return {"seconds": time.perf_counter() - began}

        return self._run(go)

    def steady(self, kind: str, start: int, rate: float, seconds: float) -> dict[str, Any]:
        async def go() -> dict[str, Any]:
            total, sent = int(rate * seconds), 0
            began = time.perf_counter()
            while sent < total and time.perf_counter() - began < seconds:
                count, wait = due(began, sent, total, rate)
                if count:
                    numbers = range(start + sent, start + sent + count)
                    await self.adapter.enqueue_many(kind, calls(numbers))
                    sent += count
                else:
                    await asyncio.sleep(wait)
            elapsed = time.perf_counter() - began
            return {"sent": sent, "seconds": elapsed, "end_ns": time.time_ns()}

        return self._run(go)

    def close(self) -> None:
        self.loop.run_until_complete(self.adapter.close())
        self.loop.close()


def handle(driver: SyncDriver | AsyncDriver, request: dict[str, Any]) -> dict[str, Any]:
    """One request's answer."""
    op = request.pop("op")
    if op == "worker":
        spec = driver.adapter.worker(
            request["kind"], request["concurrency"], request.get("processes", 1)
        )
        return dataclasses.asdict(spec)
    if op in ("enqueue_many", "enqueue_one", "steady"):
        return dict(getattr(driver, op)(**request))
    raise ValueError(f"unknown op {op!r}")


def serve(system: str, replies: TextIO) -> None:
    """Answer requests on stdin until ``quit`` or end of input."""
    module = importlib.import_module(f"bench.peers.systems.{system}_")
    adapter = module.ADAPTER
    driver = AsyncDriver(adapter) if adapter.is_async else SyncDriver(adapter)
    replies.write(json.dumps({"ready": True, "bulk": adapter.bulk}) + "\n")
    replies.flush()
    for line in sys.stdin:
        request = json.loads(line)
        if request.get("op") == "quit":
            break
        try:
            answer = handle(driver, request)
        except Exception as exc:  # the driver reports it and marks the row invalid
            answer = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(answer) + "\n")
        replies.flush()
    driver.close()


def main() -> None:
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # whatever a library prints goes to stderr, not into the protocol
    serve(sys.argv[1], replies)


if __name__ == "__main__":
    main()
