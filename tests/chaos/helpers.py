"""What the chaos tests share: the processes of one Conveyor deployment on one Redis,
its history, and a look at the store's own bookkeeping."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from redis import Redis

from conveyor.backends.redis._codec import events_from_entry
from conveyor.loader import load_app
from tests.e2e.harness import HISTORY_APP, History, conveyor, stop
from tests.redis_server import RedisServer

LEASE = 2.0
GRACE = 3.0
#: How soon a dead worker's jobs must start again elsewhere (RELIABILITY G1).
RECOVERY_BOUND = 1.5 * LEASE + 1.0
PREFIX = "conveyor"


def wait_until(
    condition: Callable[[], object], timeout: float, what: str, interval: float = 0.05
) -> float:
    """Poll ``condition`` until it is true; return when it became so (``time.time()``).

    Raises:
        AssertionError: still false after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        if condition():
            return time.time()
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


@dataclass
class StoreState:
    """Redis-side bookkeeping of the default queue."""

    stream_entries: int  # XLEN summed over the work streams
    pel: int  # XPENDING count summed over the work streams
    leases: int
    pending: int
    delayed: int
    completed: int
    failed: int


class Cluster:
    """The Conveyor processes of one test on one Redis server.

    Args:
        tmp_path: the test's directory (logs, histories).
        redis: the server.
        procs: where started processes are registered (the fixture kills them).
    """

    def __init__(
        self, tmp_path: Path, redis: RedisServer, procs: list[subprocess.Popen[bytes]]
    ) -> None:
        self.tmp_path = tmp_path
        self.redis = redis
        self.procs = procs
        self._names: dict[int, str] = {}
        self.history_dir = tmp_path / "history"
        self.history_dir.mkdir(exist_ok=True)
        self.history = History()
        self.env = {
            "HISTORY_DIR": str(self.history_dir),
            "CONVEYOR_URL": redis.url,
            "CONVEYOR_LEASE_SECONDS": str(LEASE),
            "CONVEYOR_SHUTDOWN_GRACE_SECONDS": str(GRACE),
        }

    # -- processes -------------------------------------------------------------------
    def start(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        proc = conveyor(*args, env=self.env, log=self.log_path(name))
        self.procs.append(proc)
        self._names[proc.pid] = name
        return proc

    def stop_cleanly(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM ``proc`` and check that it drains and exits 0; if not, the failure
        shows the end of its log (the test's directory may be gone by the time anyone
        looks)."""
        code = stop(proc, signal.SIGTERM)
        name = self._names.get(proc.pid, "?")
        assert code == 0, f"{name} exited with {code}; its log ends:\n{self.log(name)[-4000:]}"

    def worker(
        self, name: str, *, concurrency: int = 20, processes: int = 1, ready: bool = True
    ) -> subprocess.Popen[bytes]:
        """Start ``conveyor worker`` (a supervisor when ``processes`` > 1)."""
        args = ["worker", HISTORY_APP, "--concurrency", str(concurrency)]
        if processes > 1:
            args += ["--processes", str(processes)]
        proc = self.start(name, *args)
        if ready:
            self.wait_log(name, " consuming ", count=processes)
        return proc

    def log_path(self, name: str) -> Path:
        return self.tmp_path / f"{name}.log"

    def log(self, name: str) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_log(self, name: str, text: str, *, count: int = 1, timeout: float = 30) -> float:
        return wait_until(
            lambda: self.log(name).count(text) >= count, timeout, f"{text!r} in {name}.log"
        )

    # -- jobs ------------------------------------------------------------------------
    def enqueue(self, jobs: Sequence[tuple[int, float]], chunk: int = 1000) -> list[str]:
        """Enqueue ``record(n, sleep)`` jobs from this process; their ids in order."""
        app = load_app(HISTORY_APP)
        app.settings = app.settings.replace(url=self.redis.url)
        task = app.get_task("record")

        async def go() -> list[str]:
            try:
                ids: list[str] = []
                for i in range(0, len(jobs), chunk):
                    part = [((n, s), {}) for n, s in jobs[i : i + chunk]]
                    ids += [h.id for h in await task.enqueue_many(part)]
                return ids
            finally:
                await app.aclose()

        return asyncio.run(go())

    def poll(self) -> History:
        """The history so far (reads only what was appended since the last call)."""
        return self.history.update(self.history_dir)

    def wait_finished(self, ids: set[str] | list[str], timeout: float) -> float:
        wanted = set(ids)
        return wait_until(
            lambda: wanted <= self.poll().finishes.keys(),
            timeout,
            f"{len(wanted)} jobs to finish (missing {len(wanted - self.history.finishes.keys())})",
            interval=0.1,
        )

    # -- the store -------------------------------------------------------------------
    def raw(self) -> Redis:
        return Redis(port=self.redis.port, decode_responses=True)

    def store_state(self) -> StoreState:
        base = f"{PREFIX}:{{q:default}}:"
        with self.raw() as r:
            streams = [k for k in r.scan_iter(f"{base}s:*") if r.type(k) == "stream"]
            entries = sum(int(r.xlen(s)) for s in streams)
            pel = sum(int(r.xpending(s, "conveyor")["pending"]) for s in streams)
            return StoreState(
                stream_entries=entries,
                pel=pel,
                leases=int(r.zcard(base + "leases")),
                pending=int(r.zcard(base + "i:pending")),
                delayed=int(r.zcard(base + "delayed")),
                completed=int(r.zcard(base + "i:completed")),
                failed=int(r.zcard(base + "i:failed")),
            )

    def job(self, job_id: str) -> dict[str, Any]:
        """The raw record of a job (fields in ``scripts/lib.lua``: s status, a attempts)."""
        with self.raw() as r:
            record: dict[str, Any] = r.hgetall(f"{PREFIX}:job:{job_id}")
            return record

    def events(self, job_id: str) -> list[str]:
        """The types of the job's events in the feed, oldest first."""
        with self.raw() as r:
            entries = r.xrange(f"{PREFIX}:events")
        return [
            event.type
            for entry_id, fields in entries
            for event in events_from_entry(entry_id, fields)
            if event.job_id == job_id
        ]
