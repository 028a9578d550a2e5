"""Real processes for end-to-end tests: start, wait, signal, and read job histories."""

from __future__ import annotations

import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path

import httpx

HISTORY_APP = f"{Path(__file__).with_name('history_app.py')}:app"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def conveyor(*args: str, env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    """Start ``python -m conveyor ARGS`` in its own session, logging to ``log``."""
    with log.open("ab") as out:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "conveyor", "--log-level", "info", *args],
            env={**os.environ, **env},
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def wait_ready(base_url: str, proc: subprocess.Popen[bytes], timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before it was ready")
        try:
            if httpx.get(f"{base_url}/readyz", timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"{base_url} not ready after {timeout}s")


def stop(proc: subprocess.Popen[bytes], sig: int = signal.SIGKILL, timeout: float = 30) -> int:
    if proc.poll() is None:
        os.kill(proc.pid, sig)
    return proc.wait(timeout)


Record = dict[str, object]


@dataclass
class History:
    """Start and finish records of every job, from every process.

    :meth:`read` parses a directory once; :meth:`update` parses only what was appended
    since the last call (cheap enough to poll while tens of thousands of jobs run).
    """

    starts: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))
    finishes: dict[str, list[Record]] = field(default_factory=lambda: defaultdict(list))
    _offsets: dict[Path, int] = field(default_factory=dict, repr=False)

    @classmethod
    def read(cls, directory: Path) -> History:
        history = cls()
        history.update(directory)
        return history

    def update(self, directory: Path) -> History:
        """Add the complete lines appended to the directory's files since the last call."""
        for path in sorted(directory.glob("*.jsonl")):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n") + 1  # a line still being written waits for next time
            self._offsets[path] = offset + end
            for line in data[:end].splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the one line a SIGKILL may cut short
                target = self.starts if record["kind"] == "start" else self.finishes
                target[record["id"]].append(record)
        return self

    def duplicates(self) -> set[str]:
        return {job_id for job_id, runs in self.starts.items() if len(runs) > 1}

    def pids(self) -> set[int]:
        return {int(str(r["pid"])) for runs in self.starts.values() for r in runs}

    def in_flight_at(self, pid: int, killed_at: float, ack_window: float) -> set[str]:
        """Jobs started by ``pid`` whose outcome may not have been stored at the kill:
        no finish record, or one written less than ``ack_window`` seconds before it."""
        suspects = set()
        for job_id, runs in self.starts.items():
            if not any(r["pid"] == pid for r in runs):
                continue
            done = [f for f in self.finishes.get(job_id, []) if f["pid"] == pid]
            if not done or min(_t(f) for f in done) > killed_at - ack_window:
                suspects.add(job_id)
        return suspects


def _t(record: Record) -> float:
    return float(record["t"])  # type: ignore[arg-type]


@dataclass(frozen=True)
class Fault:
    """Something the chaos driver did: to a worker (``pid``) or to the store (``pid``
    None), from ``t`` until ``until`` (the thaw or restart; ``t`` for a kill)."""

    kind: str
    t: float
    until: float
    pid: int | None = None

    @property
    def duration(self) -> float:
        return self.until - self.t


@dataclass
class Verdict:
    """What :func:`check` found; see RELIABILITY.md "How to test it"."""

    lost: set[str]
    unexpected: set[str]
    recovered: set[str]
    duplicates: set[str]
    unjustified: set[str]
    in_flight: dict[Fault, set[str]]
    #: seconds from a worker fault to the re-start of each job it orphaned
    recovery: dict[str, float]
    #: seconds from each store fault's end to the first start after it
    resume: dict[Fault, float]

    def summary(self) -> str:
        worst = max(self.recovery.values(), default=0.0)
        mean = sum(self.recovery.values()) / len(self.recovery) if self.recovery else 0.0
        flights = {f"{f.kind}@{f.pid or 'redis'}": len(ids) for f, ids in self.in_flight.items()}
        resume = {f.kind: round(s, 3) for f, s in self.resume.items()}
        return (
            f"lost={len(self.lost)} unexpected={len(self.unexpected)} "
            f"recovered={len(self.recovered)} duplicates={len(self.duplicates)} "
            f"unjustified={len(self.unjustified)} in_flight={flights} "
            f"recovery: n={len(self.recovery)} max={worst:.3f}s mean={mean:.3f}s "
            f"resume_after_store_fault={resume}"
        )


def check(
    history: History,
    acknowledged: set[str],
    *,
    invoked: set[int] | None = None,
    faults: list[Fault] | tuple[Fault, ...] = (),
    ack_window: float = 1.0,
) -> Verdict:
    """A Jepsen "total-queue" style check of a history after drain.

    Args:
        history: every start and finish record.
        acknowledged: ids whose enqueue was acknowledged (must all finish).
        invoked: the ``n`` of every enqueue attempted, acknowledged or not; a finished
            job whose ``n`` is not among them is unexpected (default: only the
            acknowledged ids are expected).
        faults: what the chaos driver did.
        ack_window: how long a finished attempt's outcome may wait in the worker's
            group commit before it is stored.

    A job started more than once is a justified duplicate when each earlier start can be
    blamed on a fault: it ran in the faulted process (any process for a store fault)
    before the fault ended, its outcome could not have been stored before the fault
    began (no finish by that attempt earlier than ``t - ack_window``), and the next start
    came after the fault began.
    """
    finished = set(history.finishes)
    lost = acknowledged - finished
    extra = finished - acknowledged
    if invoked is None:
        unexpected, recovered = extra, set()
    else:
        numbers = {job_id: history.finishes[job_id][0].get("n") for job_id in extra}
        unexpected = {job_id for job_id, n in numbers.items() if n not in invoked}
        recovered = extra - unexpected

    def stored_before(run: Record, instant: float) -> bool:
        return any(
            f["pid"] == run["pid"] and f["attempt"] == run["attempt"] and _t(f) < instant
            for f in history.finishes.get(str(run["id"]), [])
        )

    in_flight: dict[Fault, set[str]] = {fault: set() for fault in faults}
    for job_id, runs in history.starts.items():
        for run in runs:
            for fault in faults:
                if (
                    fault.pid in (None, run["pid"])
                    and _t(run) < fault.until
                    and not stored_before(run, fault.t - ack_window)
                ):
                    in_flight[fault].add(job_id)

    duplicates = history.duplicates()
    unjustified: set[str] = set()
    recovery: dict[str, float] = {}
    for job_id in duplicates:
        runs = sorted(history.starts[job_id], key=_t)
        for earlier, later in itertools.pairwise(runs):
            blame = [
                f
                for f in faults
                if job_id in in_flight[f]
                and f.pid in (None, earlier["pid"])
                and _t(earlier) < f.until
                and _t(later) > f.t
            ]
            if not blame:
                unjustified.add(job_id)
                continue
            worker_faults = [f for f in blame if f.pid is not None]
            if worker_faults:
                since = max(f.t for f in worker_faults)
                recovery[job_id] = max(recovery.get(job_id, 0.0), _t(later) - since)

    resume: dict[Fault, float] = {}
    all_starts = sorted(_t(r) for runs in history.starts.values() for r in runs)
    for fault in faults:
        if fault.pid is None:
            after = [t for t in all_starts if t > fault.until]
            if after:
                resume[fault] = after[0] - fault.until
    return Verdict(
        lost, unexpected, recovered, duplicates, unjustified, in_flight, recovery, resume
    )
