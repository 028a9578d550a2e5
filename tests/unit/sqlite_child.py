"""A separate process that works on a SQLite store (driven by test_sqlite_backend.py).

usage: sqlite_child.py claim|submit|enqueue URL
Prints "ready" once the store is open and waits for a line on stdin, so that the parent
can start all siblings at once; then prints a JSON list of job ids: those it claimed, or
those its submits returned.
"""

from __future__ import annotations

import asyncio
import json
import sys

from conveyor.backends.base import Outcome, OutcomeKind
from conveyor.backends.sqlite import SQLiteBackend
from conveyor.job import Job, new_job_id


async def main(mode: str, url: str) -> list[str]:
    backend = SQLiteBackend(url)
    await backend.open()
    print("ready", flush=True)
    sys.stdin.readline()
    ids: list[str] = []
    try:
        if mode == "claim":
            empty = 0
            while empty < 3:
                jobs = await backend.fetch(["default"], f"w{id(backend)}", 7, 30)
                empty = 0 if jobs else empty + 1
                ids += [j.id for j in jobs]
                await asyncio.sleep(0.002)  # the "work": lets siblings take the write lock
                await backend.complete(
                    [
                        Outcome(j.id, j.lease_owner or "", j.attempts, OutcomeKind.COMPLETED)
                        for j in jobs
                    ]
                )
        elif mode == "submit":
            for i in range(20):
                job = Job(id=new_job_id(), type="t", args=[i], idempotency_key="shared")
                (result,) = await backend.enqueue([job], idempotency_ttl=60)
                ids.append(result.job.id)
        else:
            (result,) = await backend.enqueue([Job(id=new_job_id(), type="t")], idempotency_ttl=60)
            ids.append(result.job.id)
    finally:
        await backend.aclose()
    return ids


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main(sys.argv[1], sys.argv[2]))))
