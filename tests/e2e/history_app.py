"""The app end-to-end tests run in real processes.

Each job appends ``start`` and ``finish`` records as JSON lines to a file per process in
``$HISTORY_DIR`` (opened with O_APPEND and written whole per line, so a SIGKILL loses at
most the line being written), which lets a checker find lost and duplicated jobs.
"""

from __future__ import annotations

import asyncio
import json
import os
import time

from conveyor import Conveyor, current_job

app = Conveyor()

_fd: int | None = None


def _record(kind: str, job_id: str, attempt: int, n: int) -> None:
    global _fd
    if _fd is None:
        path = os.path.join(os.environ["HISTORY_DIR"], f"{os.getpid()}.jsonl")
        _fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    line = json.dumps(
        {
            "kind": kind,
            "id": job_id,
            "attempt": attempt,
            "pid": os.getpid(),
            "t": time.time(),
            "n": n,
        }
    )
    os.write(_fd, (line + "\n").encode())


@app.task(retries=5)
async def record(n: int, sleep: float = 0.0) -> int:
    """Sleep a little between a start and a finish record; return ``n``."""
    ctx = current_job()
    _record("start", ctx.id, ctx.attempt, n)
    if sleep:
        await asyncio.sleep(sleep)
    _record("finish", ctx.id, ctx.attempt, n)
    return n
