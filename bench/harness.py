"""What the benchmark scripts share: a store of their own, a `conveyor api` process,
readiness, CPU accounting and an optional py-spy recording.

Servers are started on free loopback ports (never 6379) and stopped when the block ends.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: The app the API benchmarks submit to: one task that does nothing.
APP = """
from conveyor import Conveyor

app = Conveyor()


@app.task()
async def noop(n: int) -> int:
    return n
"""


def free_port() -> int:
    """A free loopback port, never Redis' default."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379:
            return port


def wait_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    sys.exit(f"nothing listens on port {port} after {timeout}s")


def wait_ready(port: int, timeout: float = 30.0) -> None:
    """Until the API on ``port`` answers ``/readyz`` with 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=2) as r:
                if r.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.1)
    sys.exit(f"/readyz did not answer 200 within {timeout}s")


@contextmanager
def redis_server(directory: Path) -> Iterator[str]:
    """A redis-server with AOF (everysec) in ``directory``; yields its URL."""
    binary = shutil.which("redis-server")
    if binary is None:
        sys.exit("redis-server is not installed (Debian/Ubuntu: apt-get install redis-server)")
    port = free_port()
    args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
    args += ["--appendonly", "yes", "--appendfsync", "everysec", "--save", ""]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        proc.wait(10)


@contextmanager
def store(kind: str, directory: Path) -> Iterator[str]:
    """A fresh store of ``kind`` ("redis" or "sqlite"); yields its URL."""
    if kind == "redis":
        with redis_server(directory) as url:
            yield url
    else:
        yield f"sqlite:///{directory / 'bench.db'}"


@contextmanager
def api_process(directory: Path, url: str) -> Iterator[tuple[subprocess.Popen[bytes], int]]:
    """`conveyor api` serving :data:`APP` on ``url``; yields the process and its port."""
    app_file = directory / "load_app.py"
    app_file.write_text(APP)
    port = free_port()
    conveyor = Path(sys.executable).with_name("conveyor")
    args = [str(conveyor), "--log-level", "warning", "api", f"{app_file}:app"]
    args += ["--port", str(port), "--url", url]
    proc = subprocess.Popen(args, env={**os.environ, "CONVEYOR_URL": url}, start_new_session=True)
    try:
        wait_port(port)
        yield proc, port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()


@contextmanager
def py_spy(pid: int, out: str | None, *, rate: int = 200) -> Iterator[None]:
    """Record ``pid`` with py-spy into ``out`` (.svg: flame graph, else collapsed stacks)
    for the duration of the block; nothing when ``out`` is None or py-spy is missing."""
    local = Path(sys.executable).with_name("py-spy")
    binary = str(local) if local.exists() else shutil.which("py-spy")
    if out is None or binary is None:
        yield
        return
    fmt = "flamegraph" if out.endswith(".svg") else "raw"
    spy = subprocess.Popen(
        [binary, "record", "-p", str(pid), "-o", out, "--rate", str(rate), "--nonblocking",
         "--format", fmt],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    time.sleep(1.0)  # attached before the measured part starts
    try:
        yield
    finally:
        spy.send_signal(signal.SIGINT)
        spy.wait(60)


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
