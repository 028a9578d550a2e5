"""Load on the HTTP submit path: POST /api/v1/jobs from N concurrent clients.

Starts its own ``conveyor api`` process (one uvicorn worker, uvloop) on a free loopback
port, on SQLite (a temporary file) or on Redis (a ``redis-server`` it starts on a free
port, never 6379), warms up, then sends a bounded number of submits (or for a bounded
time) and reports throughput and latency percentiles. Nothing consumes the jobs.

    .venv/bin/python bench/api_load.py --store sqlite --requests 20000
    .venv/bin/python bench/api_load.py --store redis --requests 50000 --json out.json
    .venv/bin/python bench/api_load.py --store redis --profile   # py-spy on the server
"""

from __future__ import annotations

import argparse
import asyncio
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import api_process, cpu_seconds, py_spy, store

from conveyor.benchmark_env import describe, note_speed_after


async def client_loop(
    client: httpx.AsyncClient, quota: list[int], deadline: float, latencies: list[float]
) -> int:
    errors = 0
    body = b'{"type":"noop","parameters":{"n":1}}'
    headers = {"content-type": "application/json"}
    while quota[0] > 0 and time.monotonic() < deadline:
        quota[0] -= 1
        started = time.perf_counter()
        response = await client.post("/api/v1/jobs", content=body, headers=headers)
        latencies.append(time.perf_counter() - started)
        if response.status_code != 202:
            errors += 1
    return errors


async def load(port: int, clients: int, requests: int, seconds: float) -> dict[str, Any]:
    """One client process: ``clients`` concurrent loops on one connection pool."""
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{port}", limits=limits, timeout=30.0
    ) as client:
        warm: list[float] = []
        await asyncio.gather(
            *(client_loop(client, [20], time.monotonic() + 10, warm) for _ in range(clients))
        )
        latencies: list[float] = []
        quota = [requests]
        started = time.time()
        errors = await asyncio.gather(
            *(
                client_loop(client, quota, time.monotonic() + seconds, latencies)
                for _ in range(clients)
            )
        )
        ended = time.time()
    return {
        "latencies": latencies,
        "errors": sum(errors),
        "started": started,
        "ended": ended,
        "warmup": len(warm),
    }


def drive(port: int, args: argparse.Namespace, api_pid: int) -> dict[str, Any]:
    """Run the client processes and merge what they measured."""
    procs = max(1, args.processes)
    with tempfile.TemporaryDirectory() as tmp:
        children = []
        for i in range(procs):
            out = Path(tmp) / f"client-{i}.json"
            cmd = [sys.executable, __file__, "--client", str(port), "--out", str(out)]
            cmd += ["--clients", str(args.clients // procs), "--seconds", str(args.seconds)]
            cmd += ["--requests", str(args.requests // procs)]
            children.append((subprocess.Popen(cmd), out))
        cpu_before = cpu_seconds(api_pid)
        for child, _ in children:
            child.wait()
        cpu = cpu_seconds(api_pid) - cpu_before
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        parts = [json.loads(out.read_text()) for _, out in children]
    latencies = sorted(x for p in parts for x in p["latencies"])
    elapsed = max(p["ended"] for p in parts) - min(p["started"] for p in parts)
    total = len(latencies) + sum(p["warmup"] for p in parts)

    def pct(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    return {
        "client_processes": procs,
        "requests": len(latencies),
        "errors": sum(p["errors"] for p in parts),
        "seconds": round(elapsed, 3),
        "per_second": round(len(latencies) / elapsed, 1),
        "p50_ms": round(pct(0.50), 2),
        "p90_ms": round(pct(0.90), 2),
        "p99_ms": round(pct(0.99), 2),
        "max_ms": round(latencies[-1] * 1000, 2),
        # The API process's own cost, independent of how fast the clients are.
        "api_cpu_ms_per_request": round(cpu / total * 1000, 3),
        # The load generator's (httpx) cost: on a 2-core machine it competes with the API.
        "client_cpu_ms_per_request": round((usage.ru_utime + usage.ru_stime) / total * 1000, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", choices=["sqlite", "redis"], default="sqlite")
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--seconds", type=float, default=60.0, help="upper bound on the run")
    parser.add_argument("--json", help="write the result here too")
    parser.add_argument(
        "--profile", action="store_true", help="record the API process with py-spy (if installed)"
    )
    parser.add_argument("--processes", type=int, default=2, help="client processes")
    parser.add_argument("--client", type=int, help=argparse.SUPPRESS)  # a child: the API port
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.client:
        measured = asyncio.run(load(args.client, args.clients, args.requests, args.seconds))
        Path(args.out).write_text(json.dumps(measured))
        return

    profile = f"api-load-{args.store}.folded" if args.profile else None
    with (
        tempfile.TemporaryDirectory(prefix="conveyor-api-load-") as tmp,
        store(args.store, Path(tmp)) as url,
        api_process(Path(tmp), url) as (api, port),
        py_spy(api.pid, profile, rate=250),
    ):
        environment = asyncio.run(describe(url))
        result = drive(port, args, api.pid)
        note_speed_after(environment)
    result = {"store": args.store, "clients": args.clients, **result, "environment": environment}
    print(json.dumps(result, indent=2))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
