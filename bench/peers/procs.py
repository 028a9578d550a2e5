"""The processes the driver runs for one system: its client and its worker.

Both run with that system's virtualenv, from the repository root (so ``bench.peers`` is
importable), and write their output to log files in the run's directory.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
VENVS = Path(__file__).resolve().parent / ".venvs"


#: Interpreters to use instead of a system's virtualenv (the harness's tests use their own).
INTERPRETERS: dict[str, str] = {}


def python(system: str) -> str:
    """The interpreter of a system's virtualenv."""
    return INTERPRETERS.get(system) or str(VENVS / system / "bin" / "python")


def environment(
    redis_url: str, counter_dir: Path, extra: dict[str, str] | None = None
) -> dict[str, str]:
    """The environment of a client or worker: where Redis and the counter files are."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VIRTUAL_ENV", "PYTHON"))}
    env.update(
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
        PEERS_REDIS_URL=redis_url,
        PEERS_COUNTER_DIR=str(counter_dir),
    )
    env.update(extra or {})
    return env


class ClientError(RuntimeError):
    """The client failed a request, died or did not answer in time."""


class Client:
    """The system's producer process (``bench.peers.client``), one request at a time.

    Args:
        system: the system's name.
        env: from :func:`environment`.
        log: where its stderr goes.
    """

    def __init__(self, system: str, env: dict[str, str], log: Path) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            [python(system), "-m", "bench.peers.client", system],
            cwd=ROOT,
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._log,
            text=True,
        )
        self.hello = self._answer(60.0)

    def request(self, op: str, timeout: float = 300.0, **args: Any) -> dict[str, Any]:
        """Send one request and return its answer."""
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps({"op": op, **args}) + "\n")
        self.proc.stdin.flush()
        return self._answer(timeout)

    def _answer(self, timeout: float) -> dict[str, Any]:
        assert self.proc.stdout is not None
        ready, _, _ = select.select([self.proc.stdout], [], [], timeout)
        line = self.proc.stdout.readline() if ready else ""
        if not line:
            raise ClientError(f"client gave no answer within {timeout:.0f}s (see {self._log.name})")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise ClientError(answer["error"])
        return answer

    def close(self) -> None:
        """Ask it to quit, then make sure it has."""
        try:
            assert self.proc.stdin is not None
            self.proc.stdin.write('{"op": "quit"}\n')
            self.proc.stdin.close()
            self.proc.wait(timeout=15)
        except (OSError, subprocess.TimeoutExpired):
            self.proc.kill()
            self.proc.wait()
        if self.proc.stdout is not None:
            self.proc.stdout.close()
        self._log.close()


def _children(pid: int) -> list[int]:
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    return [int(p) for p in text.split()]


def _status_kb(pid: int, field: str) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{field}:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


class Worker:
    """One worker command, in its own session so that a stop reaches its children.

    Args:
        argv: the command (from the client's ``worker`` answer).
        env: from :func:`environment`, plus the adapter's extra variables.
        log: where its output goes.
    """

    def __init__(self, argv: list[str], env: dict[str, str], log: Path) -> None:
        self._log = log.open("ab")
        self.proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def tree(self) -> list[int]:
        """The worker's pid and its descendants' (prefork pools, supervisors)."""
        pids, todo = [], [self.proc.pid]
        while todo:
            pid = todo.pop()
            pids.append(pid)
            todo.extend(_children(pid))
        return pids

    def peak_rss(self) -> dict[str, Any]:
        """Peak resident memory (VmHWM) of each live process of the tree, in MB."""
        peaks = {pid: _status_kb(pid, "VmHWM") / 1024 for pid in self.tree()}
        peaks = {pid: mb for pid, mb in peaks.items() if mb}
        return {
            "total_mb": sum(peaks.values()),
            "processes": len(peaks),
            "max_mb": max(peaks.values(), default=0.0),
        }

    def stop(self, grace: float = 15.0) -> None:
        """SIGTERM to the whole session, then SIGKILL after ``grace`` seconds."""
        for sig, wait in ((signal.SIGTERM, grace), (signal.SIGKILL, 10.0)):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=wait)
                break
            except subprocess.TimeoutExpired:
                continue
        # Children that outlive their parent (a pool's processes) go with the group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self._log.close()


class Completions:
    """The counter files of one workload, read incrementally while it runs.

    Args:
        directory: ``PEERS_COUNTER_DIR`` of the workload's processes.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self._offsets: dict[Path, int] = {}
        self._chunks: list[bytes] = []
        self.count = 0

    def poll(self) -> int:
        """Read what was written since the last poll; the number of completions so far."""
        for path in self.directory.glob("*.log"):
            offset = self._offsets.get(path, 0)
            with path.open("rb") as f:
                f.seek(offset)
                data = f.read()
            end = data.rfind(b"\n") + 1  # a torn last line waits for the next poll
            if end:
                self._chunks.append(data[:end])
                self._offsets[path] = offset + end
                self.count += data.count(b"\n", 0, end)
        return self.count

    def wait(self, target: int, deadline: float, worker: Worker | None = None) -> bool:
        """Poll until ``target`` completions or ``deadline`` (monotonic); False on a timeout."""
        while self.poll() < target:
            if time.monotonic() > deadline or (worker is not None and not worker.alive()):
                return False
            time.sleep(0.02)
        return True

    def lines(self) -> list[bytes]:
        """Every line read so far."""
        return b"".join(self._chunks).splitlines()
