"""Redis server work per job, step by step: enqueue, fetch, complete.

Starts its own ``redis-server`` (AOF on, ``appendfsync everysec``) on a free loopback
port, then drives the Redis store directly, without a worker: N no-op jobs enqueued in
batches of 1,000, fetched in batches of ``--fetch-batch``, completed in batches of
``--complete-batch``. For each step it reports the server's CPU time per job (``INFO
cpu``) and, when ``perf`` is installed, the instructions and cycles the server process
executed per job (``perf stat -p``).

Why instructions: on a shared VM the CPU time of the same work varies by a third from
one minute to the next, while the instruction count repeats to within 0.2%, so two
commits are compared by instructions and a change is kept when it lowers them. CPU time
is still what ``conveyor bench`` reports.

Usage::

    .venv/bin/python bench/redis_work.py --jobs 20000 --runs 3 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from harness import redis_server

from conveyor.backends.base import Outcome, OutcomeKind
from conveyor.backends.redis import RedisBackend
from conveyor.benchmark_env import describe, note_speed_after
from conveyor.job import Job, new_job_id

STEPS = ("enqueue", "fetch", "complete")
COUNTERS = ("instructions", "cycles")


class _Perf:
    """``perf stat`` attached to one process between ``start`` and ``stop``."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.available = shutil.which("perf") is not None
        self._proc: subprocess.Popen[str] | None = None

    async def start(self) -> None:
        if self.available:
            events = ",".join(COUNTERS)
            cmd = ["perf", "stat", "-x,", "-e", events, "-p", str(self.pid)]
            self._proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True)
            await asyncio.sleep(0.2)  # attached before the step starts

    def stop(self) -> dict[str, int]:
        if self._proc is None:
            return {}
        self._proc.send_signal(signal.SIGINT)
        _, err = self._proc.communicate()
        self._proc = None
        counts: dict[str, int] = {}
        for line in err.splitlines():
            value, _, rest = line.partition(",")
            for name in COUNTERS:
                if rest.startswith(f",{name}") and value.isdigit():
                    counts[name] = int(value)
        return counts


async def _cpu(client: Any) -> float:
    info = await client.info("cpu")
    return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])


async def one_run(url: str, jobs: int, fetch_batch: int, complete_batch: int) -> dict[str, Any]:
    client = aioredis.Redis.from_url(url)
    await client.flushall()
    store = RedisBackend(url)
    await store.open()
    perf = _Perf(int((await client.info("server"))["process_id"]))
    queue = f"work-{uuid.uuid4().hex[:8]}"
    batch = [Job(id=new_job_id(), type="bench.noop", queue=queue) for _ in range(jobs)]
    leased: list[Job] = []

    async def enqueue() -> None:
        for start in range(0, jobs, 1000):
            await store.enqueue(batch[start : start + 1000], idempotency_ttl=3600)

    async def fetch() -> None:
        while len(leased) < jobs:
            leased.extend(await store.fetch([queue], "w1", fetch_batch, 30.0))

    async def complete() -> None:
        for start in range(0, jobs, complete_batch):
            await store.complete(
                [
                    Outcome(job.id, "w1", job.attempts, OutcomeKind.COMPLETED)
                    for job in leased[start : start + complete_batch]
                ]
            )

    out: dict[str, Any] = {}
    try:
        for name, step in zip(STEPS, (enqueue, fetch, complete), strict=True):
            await perf.start()
            before = await _cpu(client)
            await step()
            after = await _cpu(client)
            counts = perf.stop()
            out[name] = {"cpu_us": (after - before) / jobs * 1e6} | {
                k: v / jobs for k, v in counts.items()
            }
    finally:
        await store.aclose()
        await client.aclose()
    return out


def summary(runs: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median of each figure over the runs, per step and for the whole lifecycle."""
    table: dict[str, dict[str, float]] = {}
    for name in (*STEPS, "lifecycle"):
        figures: dict[str, float] = {}
        for key in ("cpu_us", *COUNTERS):
            if name == "lifecycle":
                values = [sum(r[s][key] for s in STEPS) for r in runs if key in r["enqueue"]]
            else:
                values = [r[name][key] for r in runs if key in r[name]]
            if values:
                figures[key] = statistics.median(values)
        table[name] = figures
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--fetch-batch", type=int, default=60)
    parser.add_argument("--complete-batch", type=int, default=80)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, redis_server(Path(tmp)) as url:
        environment = asyncio.run(describe(url))
        runs = [
            asyncio.run(one_run(url, args.jobs, args.fetch_batch, args.complete_batch))
            for _ in range(args.runs)
        ]
        note_speed_after(environment)
    table = summary(runs)
    print(f"Redis server work per job, median of {args.runs} runs of {args.jobs:,} jobs")
    print(f"{'step':<10} {'CPU µs':>8} {'instructions':>13} {'cycles':>10}")
    for name, figures in table.items():
        cells = [f"{figures.get('cpu_us', 0):8.1f}"]
        cells += [f"{figures[k]:>13,.0f}" if k in figures else f"{'-':>13}" for k in COUNTERS]
        print(f"{name:<10} {' '.join(cells)}")
    if not shutil.which("perf"):
        print("(perf is not installed: no instruction counts)", file=sys.stderr)
    if args.json:
        record = {"runs": runs, "median": table, "environment": environment}
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
