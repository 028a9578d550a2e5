"""Real processes for end-to-end tests: start, wait, signal, and read job histories."""

from __future__ import annotations

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


@dataclass
class History:
    """Start and finish records of every job, from every process."""

    starts: dict[str, list[dict[str, object]]] = field(default_factory=lambda: defaultdict(list))
    finishes: dict[str, list[dict[str, object]]] = field(default_factory=lambda: defaultdict(list))

    @classmethod
    def read(cls, directory: Path) -> History:
        history = cls()
        for path in directory.glob("*.jsonl"):
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    continue  # the one line a SIGKILL may cut short
                target = history.starts if record["kind"] == "start" else history.finishes
                target[record["id"]].append(record)
        return history

    def duplicates(self) -> set[str]:
        return {job_id for job_id, runs in self.starts.items() if len(runs) > 1}

    def in_flight_at(self, pid: int, killed_at: float, ack_window: float) -> set[str]:
        """Jobs started by ``pid`` whose outcome may not have been stored at the kill:
        no finish record, or one written less than ``ack_window`` seconds before it."""
        suspects = set()
        for job_id, runs in self.starts.items():
            if not any(r["pid"] == pid for r in runs):
                continue
            done = [f for f in self.finishes.get(job_id, []) if f["pid"] == pid]
            if not done or min(float(f["t"]) for f in done) > killed_at - ack_window:  # type: ignore[arg-type]
                suspects.add(job_id)
        return suspects
