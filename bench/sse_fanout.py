"""SSE fan-out: events per second delivered to many subscribers of one API process.

Starts ``conveyor run`` (API + worker) on a throwaway SQLite file, opens ``--subscribers``
event streams with plain sockets (so the reader costs little next to the server), enqueues
``--jobs`` no-op jobs (3 events each: created, started, completed) and reports how many
events reached every subscriber and how fast.

    .venv/bin/python bench/sse_fanout.py --subscribers 100 --jobs 3000
"""

from __future__ import annotations

import argparse
import asyncio
import json
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from conveyor.benchmark import app, noop
from conveyor.benchmark_env import describe, note_speed_after

sys.path.insert(0, str(Path(__file__).resolve().parent))

from harness import free_port, wait_ready


async def subscriber(port: int, counts: list[int], index: int, ready: asyncio.Event) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(
        b"GET /api/v1/events/stream HTTP/1.1\r\nHost: bench\r\nAccept: text/event-stream\r\n\r\n"
    )
    await writer.drain()
    ready.set()
    marker = b"\ndata: "
    # A marker split between two reads is found in the tail the next read starts with;
    # the tail is one byte shorter than the marker, so none is counted twice.
    tail = b"\n"
    try:
        while chunk := await reader.read(65536):
            data = tail + chunk
            counts[index] += data.count(marker)
            tail = data[-(len(marker) - 1) :]
    finally:
        writer.close()


async def main(args: argparse.Namespace) -> dict[str, object]:
    scratch = Path(tempfile.mkdtemp(prefix="conveyor-sse-"))
    url = f"sqlite:///{scratch / 'sse.db'}"
    environment = await describe(url)
    port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "conveyor",
            "--log-level",
            "error",
            "run",
            "conveyor.benchmark:app",
            "--url",
            url,
            "--port",
            str(port),
            "--concurrency",
            "200",
            "--no-scheduler",
        ],
        start_new_session=True,
    )
    try:
        wait_ready(port)
        counts = [0] * args.subscribers
        readies = [asyncio.Event() for _ in range(args.subscribers)]
        tasks = [
            asyncio.create_task(subscriber(port, counts, i, readies[i]))
            for i in range(args.subscribers)
        ]
        for event in readies:
            await event.wait()
        await asyncio.sleep(1.0)  # every stream registered with the hub
        app.settings = app.settings.replace(url=url)
        expected = 3 * args.jobs
        started = time.perf_counter()
        for offset in range(0, args.jobs, 500):
            await noop.enqueue_many([((), {})] * min(500, args.jobs - offset))
        deadline = time.monotonic() + 120
        while min(counts) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        elapsed = time.perf_counter() - started
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await app.aclose()
        delivered = sum(min(c, expected) for c in counts)
        note_speed_after(environment)
        return {
            "subscribers": args.subscribers,
            "jobs": args.jobs,
            "events_per_subscriber_expected": expected,
            "events_per_subscriber_min": min(counts),
            "seconds": round(elapsed, 3),
            "events_delivered_per_s": round(delivered / elapsed),
            "events_per_s_per_subscriber": round(expected / elapsed),
            "environment": environment,
        }
    finally:
        server.send_signal(signal.SIGTERM)
        server.wait(30)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subscribers", type=int, default=100)
    parser.add_argument("--jobs", type=int, default=3000)
    parser.add_argument("--json", default=None)
    result = asyncio.run(main(parser.parse_args()))
    print(json.dumps(result, indent=2))
    if result["events_per_subscriber_min"] != result["events_per_subscriber_expected"]:
        sys.exit("some subscriber missed events")
    if parser.parse_args().json:
        Path(parser.parse_args().json).write_text(json.dumps(result, indent=2))
