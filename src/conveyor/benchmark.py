"""``conveyor bench``: what this machine does with Conveyor, measured end to end.

Scenarios, all on a fresh, uniquely named queue:

- **enqueue**: ``enqueue_many`` in batches of 1,000, and one ``enqueue`` at a time;
- **drain**: no-op jobs all queued first, then run by ``workers`` worker processes; the
  rate is jobs ÷ (last completion − first start), read from the job records, so worker
  start-up is not counted;
- **io**: the same with jobs that sleep 10 ms, at high concurrency;
- **latency**: a producer enqueues at a steady rate while the workers run; queue wait is
  each job's ``startedAt − createdAt`` (p50/p95/p99/max);
- **delayed**: many jobs delayed by an hour (the workers' memory must not grow: they stay
  in the store), then jobs due one second after enqueue at 1,000/s: start lateness is
  ``startedAt − runAt``.

Workers are separate ``conveyor worker`` processes (their peak RSS is reported), except
on ``memory://``, which only one process can see. On Redis the server's CPU time and
command count per job come from ``INFO``.

After each scenario's timing, every job it ran is checked to have completed exactly once
(``benchmark_check``); if one failed, ran twice or went missing, the bench reports no
figure at all. The report also records where it ran (``benchmark_env``): the commit, the
host and its speed that day, and the store's durability settings.
"""

from __future__ import annotations

import asyncio
import os
import platform
import shutil
import signal
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conveyor.app import Conveyor
from conveyor.backends.base import JobFilter
from conveyor.benchmark_check import RUNS_DIR_ENV, RunLog, read_runs, verify
from conveyor.benchmark_env import MEMORY_FILESYSTEMS, describe, filesystem_of, note_speed_after
from conveyor.errors import BenchmarkError
from conveyor.job import Job
from conveyor.settings import Settings
from conveyor.task import TaskCall
from conveyor.worker import Worker

app = Conveyor(settings=Settings.from_env({}, url="memory://"))
SPEC = "conveyor.benchmark:app"
RUNS = RunLog()


@app.task(retries=0)
async def noop() -> None:
    """Does nothing but count its run: the benchmark measures Conveyor, not the task."""
    RUNS.record()


@app.task(retries=0)
async def io(ms: float) -> None:
    """Waits like a network call would."""
    RUNS.record()
    await asyncio.sleep(ms / 1000)


@dataclass
class Figure:
    """One measured figure."""

    scenario: str
    name: str
    value: float
    unit: str


@dataclass
class Report:
    """Everything one run measured, plus where it ran."""

    url: str
    workers: int
    concurrency: int
    machine: str = field(
        default_factory=lambda: (
            f"{platform.machine()}, {os.cpu_count()} cores, Python {sys.version.split()[0]}"
        )
    )
    figures: list[Figure] = field(default_factory=list)
    #: Where it ran: code, host, host speed (before and after), store settings.
    environment: dict[str, Any] = field(default_factory=dict)
    #: Jobs per scenario checked to have completed exactly once.
    verified: dict[str, int] = field(default_factory=dict)

    def add(self, scenario: str, name: str, value: float, unit: str) -> None:
        self.figures.append(Figure(scenario, name, value, unit))

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q * (len(ordered) - 1))))
    return ordered[index]


def _status_mb(pid: int, field: str) -> float:
    """A memory figure of a live process from ``/proc/PID/status``, in MB (0 if gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return 0.0


class _Workers:
    """Worker processes on one queue (or one in-process worker for memory://).

    Once the block ends, :attr:`runs` holds the runs of the queue's jobs the workers
    counted, and :attr:`problems` says which worker did not end cleanly.
    """

    def __init__(self, url: str, queue: str, count: int, concurrency: int) -> None:
        self.url, self.queue, self.count, self.concurrency = url, queue, count, concurrency
        self._procs: list[asyncio.subprocess.Process] = []
        self._inline: tuple[Worker, asyncio.Task[None]] | None = None
        self._tallies = Path(tempfile.mkdtemp(prefix="conveyor-bench-runs-"))
        self.peak_rss_mb = 0.0
        self.runs: dict[str, int] = {}
        self.problems: list[str] = []

    async def __aenter__(self) -> _Workers:
        if self.url.startswith("memory:"):
            worker = Worker(app, queues=[self.queue], concurrency=self.concurrency)
            self._inline = (worker, asyncio.create_task(worker.run()))
            return self
        command = [
            sys.executable,
            "-m",
            "conveyor",
            "--log-level",
            "error",
            "worker",
            SPEC,
            "--url",
            self.url,
            "--queues",
            self.queue,
            "--concurrency",
            str(self.concurrency),
        ]
        env = {**os.environ, RUNS_DIR_ENV: str(self._tallies)}
        self._procs = [
            await asyncio.create_subprocess_exec(*command, env=env) for _ in range(self.count)
        ]
        return self

    def rss_now_mb(self) -> float:
        """Current resident memory of the worker processes, summed."""
        return sum(_status_mb(proc.pid, "VmRSS") for proc in self._procs)

    def _sample_rss(self) -> None:
        for proc in self._procs:
            self.peak_rss_mb = max(self.peak_rss_mb, _status_mb(proc.pid, "VmHWM"))
        if self._inline is not None:
            import resource

            self.peak_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    async def __aexit__(self, *exc: object) -> None:
        self._sample_rss()
        try:
            if self._inline is not None:
                self._inline[0].stop()
                await self._inline[1]
                self.runs = dict(RUNS.by_queue[self.queue])
            for proc in self._procs:
                proc.send_signal(signal.SIGTERM)
            for proc in self._procs:
                if await asyncio.wait_for(proc.wait(), 60) != 0:
                    self.problems.append(
                        f"worker process {proc.pid} exited with {proc.returncode}: "
                        "the runs it counted are lost"
                    )
            if self._procs:
                self.runs = dict(read_runs(self._tallies, self.queue))
        finally:
            shutil.rmtree(self._tallies, ignore_errors=True)


async def _records(queue: str, expected: int) -> list[Job]:
    backend = await app.backend()
    out: list[Job] = []
    cursor = None
    while True:
        page = await backend.list_jobs(JobFilter(queue=queue), limit=500, cursor=cursor)
        out += page.items
        if page.next_cursor is None:
            return out
        cursor = page.next_cursor


async def _wait_finished(queue: str, expected: int, timeout: float) -> None:
    """Until ``expected`` jobs of ``queue`` have finished, or ``timeout`` (the check that
    follows names what did not finish)."""
    backend = await app.backend()
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = {q.name: q for q in await backend.queue_stats()}
        row = stats.get(queue)
        if row is not None and row.completed + row.failed >= expected:
            return
        await asyncio.sleep(0.05)


class _RedisMeter:
    """Server CPU seconds and commands executed, from INFO (Redis stores only)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.enabled = url.startswith(("redis://", "rediss://"))

    async def sample(self) -> tuple[float, int]:
        if not self.enabled:
            return 0.0, 0
        import redis.asyncio as aioredis

        client = aioredis.Redis.from_url(self.url.split("?")[0])
        try:
            cpu = await client.info("cpu")
            stats = await client.info("commandstats")
        finally:
            await client.aclose()
        seconds = float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])
        # Script calls are counted once as EVALSHA and again per command inside them.
        calls = sum(int(v["calls"]) for k, v in stats.items() if k not in {"cmdstat_evalsha"})
        return seconds, calls


class Bench:
    """Runs the scenarios against one store and collects a :class:`Report`.

    Args:
        url: the store.
        jobs: jobs per throughput scenario.
        concurrency: attempts at once per worker.
        workers: worker processes.
        allow_memory_fs: measure a SQLite file on tmpfs or ramfs (marked not durable).
        say: progress messages.
    """

    def __init__(
        self,
        url: str,
        *,
        jobs: int,
        concurrency: int,
        workers: int,
        allow_memory_fs: bool = False,
        say: Callable[[str], None] = lambda _: None,
    ) -> None:
        self.url, self.jobs, self.concurrency, self.workers = url, jobs, concurrency, workers
        self.allow_memory_fs = allow_memory_fs
        self.say = say
        self.report = Report(url, workers, concurrency)
        self.meter = _RedisMeter(url)
        self.enqueue_cpu_us = 0.0

    def _queue(self, scenario: str) -> str:
        return f"bench-{scenario}-{uuid.uuid4().hex[:8]}"

    async def _check(
        self,
        scenario: str,
        queue: str,
        workers: _Workers,
        expected: Sequence[str],
        not_due: Sequence[str] = (),
    ) -> list[Job]:
        """The scenario's records, once every job is shown to have completed exactly once.

        Raises:
            BenchmarkError: one failed, ran more than once or went missing.
        """
        records = await _records(queue, len(expected) + len(not_due))
        problems = workers.problems + verify(expected, records, workers.runs, not_due=not_due)
        if problems:
            raise BenchmarkError(
                f"{scenario}: not every job completed exactly once, so no figure is "
                "reported:\n  - " + "\n  - ".join(problems)
            )
        self.report.verified[scenario] = len(expected)
        return records

    async def enqueue(self) -> tuple[str, list[str]]:
        queue = self._queue("drain")
        call = noop.options(queue=queue)
        ids: list[str] = []
        self.say(f"enqueue_many: {self.jobs:,} jobs")
        cpu0, calls0 = await self.meter.sample()
        started = time.perf_counter()
        for offset in range(0, self.jobs, 1000):
            handles = await call.enqueue_many([((), {})] * min(1000, self.jobs - offset))
            ids += [h.id for h in handles]
        self.report.add(
            "enqueue", "enqueue_many", self.jobs / (time.perf_counter() - started), "jobs/s"
        )
        if self.meter.enabled:
            cpu1, calls1 = await self.meter.sample()
            self.enqueue_cpu_us = (cpu1 - cpu0) / self.jobs * 1e6
            self.report.add("enqueue", "Redis CPU per job (enqueue)", self.enqueue_cpu_us, "µs")
            self.report.add(
                "enqueue",
                "Redis commands per job (enqueue)",
                (calls1 - calls0) / self.jobs,
                "commands",
            )
        # These stay queued (nothing consumes their queue): only the enqueue is timed.
        single = min(2000, self.jobs)
        one = noop.options(queue=self._queue("single"))
        self.say(f"enqueue one at a time: {single:,} jobs")
        started = time.perf_counter()
        for _ in range(single):
            await one.enqueue()
        self.report.add(
            "enqueue", "enqueue (one at a time)", single / (time.perf_counter() - started), "jobs/s"
        )
        return queue, ids

    async def drain(self, queue: str, scenario: str, concurrency: int, ids: list[str]) -> None:
        count = len(ids)
        self.say(f"{scenario}: {count:,} jobs, {self.workers} worker(s) × {concurrency}")
        cpu0, calls0 = await self.meter.sample()
        async with _Workers(self.url, queue, self.workers, concurrency) as workers:
            await _wait_finished(queue, count, timeout=max(120.0, count / 500))
        cpu1, calls1 = await self.meter.sample()
        done = await self._check(scenario, queue, workers, ids)
        first = min(j.started_at or 0 for j in done)
        last = max(j.completed_at or 0 for j in done)
        self.report.add(scenario, "drain rate", len(done) / max(last - first, 1e-9), "jobs/s")
        self.report.add(scenario, "worker peak RSS", workers.peak_rss_mb, "MB")
        if self.meter.enabled and scenario == "drain":
            # The drain scenario's server work: fetch, run bookkeeping, ack (+ stats polls).
            self.report.add(
                scenario, "Redis CPU per job (run + ack)", (cpu1 - cpu0) / count * 1e6, "µs"
            )
            self.report.add(
                scenario,
                "Redis CPU per job, whole lifecycle",
                self.enqueue_cpu_us + (cpu1 - cpu0) / count * 1e6,
                "µs",
            )
            self.report.add(
                scenario,
                "Redis commands per job (run + ack)",
                (calls1 - calls0) / count,
                "commands",
            )

    async def io(self) -> None:
        count = min(self.jobs, 20_000)
        queue = self._queue("io")
        call = io.options(queue=queue)
        ids: list[str] = []
        for offset in range(0, count, 1000):
            handles = await call.enqueue_many([((10,), {})] * min(1000, count - offset))
            ids += [h.id for h in handles]
        await self.drain(queue, "io (10 ms sleep)", max(self.concurrency, 500), ids)

    async def _steady(self, call: TaskCall[[], Any], rate: int, seconds: float) -> list[str]:
        """Enqueue ``rate`` jobs a second for ``seconds``; their ids."""
        ids: list[str] = []
        started = time.perf_counter()
        while (elapsed := time.perf_counter() - started) < seconds:
            due = int(elapsed * rate) + 1 - len(ids)
            if due > 0:
                ids += [h.id for h in await call.enqueue_many([((), {})] * due)]
            await asyncio.sleep(0.01)
        return ids

    async def latency(self, rate: int, seconds: float) -> None:
        queue = self._queue(f"latency{rate}")
        call = noop.options(queue=queue)
        scenario = f"latency at {rate:,}/s"
        self.say(f"latency: {rate:,} jobs/s for {seconds:.0f}s")
        async with _Workers(self.url, queue, self.workers, self.concurrency) as workers:
            warm = await call.enqueue()
            await warm.wait(timeout=60)  # workers are up and warm
            ids = await self._steady(call, rate, seconds)
            await _wait_finished(queue, len(ids) + 1, timeout=120)
        jobs = await self._check(scenario, queue, workers, [warm.id, *ids])
        waits = [(j.started_at or 0) - j.created_at for j in jobs if j.id != warm.id]
        for name, q in (("p50", 0.5), ("p95", 0.95), ("p99", 0.99), ("max", 1.0)):
            self.report.add(scenario, f"queue wait {name}", percentile(waits, q) * 1000, "ms")

    async def delayed(self, count: int, rate: int, seconds: float) -> None:
        """Jobs delayed far ahead stay in the store, not in workers; due ones start on time."""
        queue = self._queue("delayed")
        call = noop.options(queue=queue)
        self.say(f"delayed: {count:,} jobs an hour ahead, then {rate:,}/s due in 1 s")
        far: list[str] = []
        async with _Workers(self.url, queue, self.workers, self.concurrency) as workers:
            warm = await call.enqueue()
            await warm.wait(timeout=60)  # workers are up and warm
            await asyncio.sleep(1.0)
            before = workers.rss_now_mb()
            later = noop.options(queue=queue, delay=3600)
            for offset in range(0, count, 1000):
                handles = await later.enqueue_many([((), {})] * min(1000, count - offset))
                far += [h.id for h in handles]
            await asyncio.sleep(3.0)  # several idle fetch cycles with the jobs in place
            after = workers.rss_now_mb()
            soon = await self._steady(noop.options(queue=queue, delay=1.0), rate, seconds)
            await _wait_finished(queue, len(soon) + 1, timeout=120)
        jobs = await self._check("delayed", queue, workers, [warm.id, *soon], not_due=far)
        due = set(soon)
        lateness = [(j.started_at or 0) - j.run_at for j in jobs if j.id in due]
        scenario = "delayed"
        self.report.add(scenario, "worker RSS before", before, "MB")
        self.report.add(
            scenario, f"worker RSS growth with {count:,} delayed jobs", after - before, "MB"
        )
        for name, q in (("p50", 0.5), ("p99", 0.99), ("max", 1.0)):
            self.report.add(
                scenario,
                f"start lateness {name} at {rate:,}/s",
                percentile(lateness, q) * 1000,
                "ms",
            )

    async def run(
        self,
        *,
        rates: Sequence[int],
        latency_seconds: float,
        io: bool,
        delayed: int = 0,
    ) -> Report:
        """Run the scenarios; the report holds figures only if every job checked out.

        Raises:
            BenchmarkError: a scenario's jobs did not each complete exactly once, or the
                store is a SQLite file in memory (unless ``allow_memory_fs``).
        """
        app.settings = app.settings.replace(url=self.url)
        try:
            environment = await describe(self.url, allow_memory_fs=self.allow_memory_fs)
            self.report.environment = environment
            queue, ids = await self.enqueue()
            await self.drain(queue, "drain", self.concurrency, ids)
            if io:
                await self.io()
            for rate in rates:
                await self.latency(rate, latency_seconds)
            if delayed:
                await self.delayed(delayed, 1000, latency_seconds)
            note_speed_after(environment)
        finally:
            await app.aclose()
        return self.report


def scratch_url() -> tuple[str, Path]:
    """A throwaway SQLite file on a disk, so a benchmark never touches real data.

    In the temporary directory, unless that is in memory (tmpfs): then in the current one.
    """
    base = tempfile.gettempdir()
    if filesystem_of(base) in MEMORY_FILESYSTEMS:
        base = os.getcwd()
    directory = Path(tempfile.mkdtemp(prefix="conveyor-bench-", dir=base))
    return f"sqlite:///{directory / 'bench.db'}", directory
