"""Scheduler throughput and fire lag: N interval schedules on Redis, one scheduler process.

Starts its own ``redis-server`` on a free loopback port (never 6379) in a temporary
directory (AOF on, ``appendfsync everysec``, as in production), stores N schedules firing
every ``--interval`` seconds, runs one :class:`~conveyor.scheduling.scheduler.Scheduler`
in this process on uvloop and measures, after a warm-up:

- fires/s: jobs created per second;
- fire lag: the store's ``created_at`` of each job minus its fire time (p50, p99, max).

``--spread`` (default) anchors the schedules evenly over one interval, as schedules
created over time are; ``--aligned`` anchors them all at one instant, the worst case: N
jobs due at the same moment.

Usage::

    .venv/bin/python bench/scheduler.py --schedules 10000 --seconds 10 [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import json
import os
import platform
import pstats
import statistics
import sys
import tempfile
from pathlib import Path
from typing import Any

from conveyor import Conveyor, Settings
from conveyor.backends.base import Schedule
from conveyor.benchmark_env import describe, note_speed_after
from conveyor.job import Job
from conveyor.runtime import run_async
from conveyor.scheduling.scheduler import Scheduler

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import redis_server


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def bench(url: str, args: argparse.Namespace) -> dict[str, Any]:
    app = Conveyor(settings=Settings.from_env({}, url=url, lease_seconds=30.0))

    @app.task()
    async def noop() -> None: ...

    backend = await app.backend()
    now = await backend.now()
    start = now + 2.0  # the first fires come after the schedules are stored
    n = args.schedules
    schedules = [
        Schedule(
            id=f"bench-{i:06d}",
            type="noop",
            interval=args.interval,
            created_at=start + (0 if args.aligned else args.interval * i / n),
            updated_at=now,
        )
        for i in range(n)
    ]
    for s in schedules:
        s.next_run_at = s.created_at + args.interval
    for chunk in range(0, n, 500):
        await asyncio.gather(*(backend.save_schedule(s) for s in schedules[chunk : chunk + 500]))

    samples: list[tuple[float, float, bool]] = []

    def on_fire(_id: str, fire_time: float, job: Job, created: bool) -> None:
        samples.append((fire_time, job.created_at, created))

    scheduler = Scheduler(app, on_fire=on_fire)
    profiler = cProfile.Profile() if args.profile else None
    runner = asyncio.create_task(scheduler.run())
    warm_until = start + args.interval + args.warmup
    measure_until = warm_until + args.seconds
    await asyncio.sleep(max(0.0, measure_until - await backend.now()) - args.seconds)
    if profiler is not None:
        profiler.enable()
    await asyncio.sleep(args.seconds + 0.5)
    if profiler is not None:
        profiler.disable()
    scheduler.stop()
    await runner
    window = [(f, c) for f, c, new in samples if warm_until <= f < measure_until and new]
    lags = [c - f for f, c in window]
    info = await backend.client.info("memory")
    await app.aclose()
    if profiler is not None:
        pstats.Stats(profiler).sort_stats("cumulative").print_stats(25)
    machine = f"{platform.machine()} {os.cpu_count()} cpus"
    return {
        "machine": f"{machine}, Python {platform.python_version()}",
        "schedules": n,
        "interval_s": args.interval,
        "anchors": "aligned" if args.aligned else "spread",
        "measured_s": args.seconds,
        "fires": len(window),
        "fires_per_s": len(window) / args.seconds,
        "lag_p50_ms": 1000 * statistics.median(lags) if lags else None,
        "lag_p99_ms": 1000 * percentile(lags, 0.99) if lags else None,
        "lag_max_ms": 1000 * max(lags) if lags else None,
        "duplicates": scheduler.stats.duplicates,
        "missed": scheduler.stats.missed,
        "redis_used_memory_mb": info.get("used_memory", 0) / 2**20,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schedules", type=int, default=10_000)
    parser.add_argument("--interval", type=float, default=1.0)
    parser.add_argument("--seconds", type=float, default=10.0, help="measured time")
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--aligned", action="store_true", help="all schedules fire together")
    parser.add_argument("--profile", action="store_true", help="cProfile the measured time")
    parser.add_argument("--json", type=Path, default=None, help="also write figures here")
    args = parser.parse_args()
    result: dict[str, Any] = {}
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-bench-") as tmp,
        redis_server(Path(tmp)) as url,
    ):

        async def go() -> None:
            environment = await describe(url)
            result.update(await bench(url, args))
            note_speed_after(environment)
            result["environment"] = environment

        run_async(go)
    print(json.dumps(result, indent=2))
    if args.json is not None:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
