"""POST /api/v1/jobs throughput and latency measured with ``wrk`` (a cheap C client).

An httpx load generator costs about as much CPU per request as the API itself, and on a
2-core machine it competes with the server; ``wrk`` costs a few microseconds. This starts
its own store (a ``redis-server`` on a free port, never 6379, or a temporary SQLite file)
and one ``conveyor api`` process, waits for ``/readyz``, warms up, then runs

    wrk -t2 -c50 -d10s --latency -s bench/api_submit.lua http://127.0.0.1:PORT

and reports requests/s, p50/p90/p99, the API process's CPU per request, and whether the
store holds as many jobs as the answers that said "stored" (202).

    .venv/bin/python bench/api_wrk.py --store redis
    .venv/bin/python bench/api_wrk.py --store sqlite --json bench/results/api-wrk-sqlite.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import api_process, cpu_seconds, py_spy, store, wait_ready

from conveyor.benchmark_env import describe, note_speed_after

SCRIPT = Path(__file__).resolve().with_name("api_submit.lua")


def run_wrk(port: int, threads: int, connections: int, seconds: float) -> dict[str, Any]:
    wrk = shutil.which("wrk")
    if wrk is None:
        sys.exit("wrk is not installed (apt-get install wrk)")
    cmd = [wrk, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "--latency"]
    cmd += ["-s", str(SCRIPT), f"http://127.0.0.1:{port}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    line = next(x for x in out.splitlines() if x.startswith("WRK_JSON "))
    measured: dict[str, Any] = json.loads(line.removeprefix("WRK_JSON "))
    measured["text"] = out
    return measured


async def stored_jobs(url: str) -> int:
    from conveyor import Conveyor, Settings

    app = Conveyor(settings=Settings(url=url))
    try:
        backend = await app.backend()
        stats = await backend.queue_stats()
        return sum(s.pending + s.scheduled + s.running + s.completed for s in stats)
    finally:
        await app.aclose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "redis"], default="redis")
    parser.add_argument("--connections", type=int, default=50)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of wrk first")
    parser.add_argument("--json", help="write the result here too")
    parser.add_argument(
        "--profile", help="record the API with py-spy (.svg: flame graph, else collapsed stacks)"
    )
    args = parser.parse_args()

    with (
        tempfile.TemporaryDirectory(prefix="conveyor-api-wrk-") as tmp,
        store(args.store, Path(tmp)) as url,
    ):
        environment = asyncio.run(describe(url))
        with api_process(Path(tmp), url) as (api, port):
            wait_ready(port)
            warm = (
                run_wrk(port, args.threads, args.connections, args.warmup) if args.warmup else None
            )
            with py_spy(api.pid, args.profile):
                cpu_before = cpu_seconds(api.pid)
                main_run = run_wrk(port, args.threads, args.connections, args.seconds)
                cpu = cpu_seconds(api.pid) - cpu_before
        stored = asyncio.run(stored_jobs(url))
        note_speed_after(environment)

    runs = [r for r in (warm, main_run) if r is not None]
    ok = sum(r["requests"] - r["status_errors"] for r in runs)
    # wrk stops with up to one request in flight per connection: the server may have
    # stored those jobs though wrk never counted the answer.
    slack = args.connections * len(runs)
    requests = main_run["requests"]
    result = {
        "store": args.store,
        "tool": "wrk",
        "threads": args.threads,
        "connections": args.connections,
        "seconds": round(main_run["duration_us"] / 1e6, 3),
        "requests": requests,
        "non_2xx": main_run["status_errors"],
        "socket_errors": sum(
            main_run[k] for k in ("connect_errors", "read_errors", "write_errors", "timeouts")
        ),
        "per_second": round(requests / (main_run["duration_us"] / 1e6), 1),
        "p50_ms": round(main_run["p50_us"] / 1000, 2),
        "p90_ms": round(main_run["p90_us"] / 1000, 2),
        "p99_ms": round(main_run["p99_us"] / 1000, 2),
        "max_ms": round(main_run["max_us"] / 1000, 2),
        "api_cpu_ms_per_request": round(cpu / max(1, requests) * 1000, 3),
        "api_cpu_cores": round(cpu / (main_run["duration_us"] / 1e6), 2),
        "accepted_responses": ok,
        "stored_jobs": stored,
        "stored_matches": ok <= stored <= ok + slack,
        "environment": environment,
    }
    print(main_run["text"], file=sys.stderr)
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if not result["stored_matches"]:
        sys.exit(f"stored jobs ({stored}) do not match accepted answers ({ok}, slack {slack})")


if __name__ == "__main__":
    main()
