"""``conveyor bench``: throughput of the store and worker on this machine.

Measures, with no-op tasks: the bulk enqueue rate (``enqueue_many``), the single enqueue
rate, and the end-to-end drain rate of one worker process (enqueue everything, then run
it all), with the process's peak RSS.
"""

from __future__ import annotations

import asyncio
import platform
import resource
import sys
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from conveyor.app import Conveyor
from conveyor.settings import Settings
from conveyor.worker import Worker

app = Conveyor(settings=Settings.from_env({}, url="memory://"))


@app.task(retries=0)
async def noop() -> None:
    """Does nothing: the benchmark measures Conveyor, not the task."""


@dataclass
class BenchResult:
    url: str
    jobs: int
    concurrency: int
    enqueue_many_per_s: float
    enqueue_single_per_s: float
    drain_per_s: float
    end_to_end_per_s: float
    peak_rss_mb: float
    python: str
    machine: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


async def run_bench(url: str, jobs: int, concurrency: int, single: int = 2000) -> BenchResult:
    """Run the benchmark against ``url`` on a fresh, uniquely named queue."""
    app.settings = app.settings.replace(url=url)
    queue = f"bench-{uuid.uuid4().hex[:8]}"
    call = noop.options(queue=queue)
    try:
        started = time.perf_counter()
        for offset in range(0, jobs, 1000):
            await call.enqueue_many([((), {})] * min(1000, jobs - offset))
        enqueued = time.perf_counter()

        worker = Worker(app, queues=[queue], concurrency=concurrency)
        runner = asyncio.create_task(worker.run())
        drain_started = time.perf_counter()
        while worker.stats.completed < jobs:  # noqa: ASYNC110 - a counter, checked cheaply
            await asyncio.sleep(0.005)
        drained = time.perf_counter()
        worker.stop()
        await runner

        single_queue = f"{queue}-single"
        one = noop.options(queue=single_queue)
        single_started = time.perf_counter()
        for _ in range(single):
            await one.enqueue()
        single_done = time.perf_counter()
    finally:
        await app.aclose()
    return BenchResult(
        url=url,
        jobs=jobs,
        concurrency=concurrency,
        enqueue_many_per_s=jobs / (enqueued - started),
        enqueue_single_per_s=single / (single_done - single_started),
        drain_per_s=jobs / (drained - drain_started),
        end_to_end_per_s=jobs / ((enqueued - started) + (drained - drain_started)),
        peak_rss_mb=_rss_mb(),
        python=sys.version.split()[0],
        machine=f"{platform.machine()} {platform.processor() or ''} {_cpu_count()} cores".strip(),
    )


def _cpu_count() -> int:
    import os

    return os.cpu_count() or 1


def default_url() -> tuple[str, Path]:
    """A throwaway SQLite file, so a benchmark never touches real data."""
    directory = Path(tempfile.mkdtemp(prefix="conveyor-bench-"))
    return f"sqlite:///{directory / 'bench.db'}", directory
