"""Fixtures of the chaos tests: a Redis server per test, and the processes a test starts
(every one is killed, with its process group, when the test ends)."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.chaos.helpers import Cluster
from tests.redis_server import RedisServer


@pytest.fixture
def redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A fresh ``redis-server`` (AOF everysec, noeviction) this test may kill or freeze;
    ``CHAOS_REDIS_ARGS`` adds server arguments (``--appendfsync always``)."""
    extra = os.environ.get("CHAOS_REDIS_ARGS", "").split()
    server = RedisServer(tmp_path / "redis", "--maxmemory-policy", "noeviction", *extra).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(tmp_path: Path, redis: RedisServer) -> Iterator[Cluster]:
    """Conveyor processes on ``redis``; all of them are gone when the test ends."""
    procs: list[subprocess.Popen[bytes]] = []
    yield Cluster(tmp_path, redis, procs)
    for proc in procs:
        # Each was started with start_new_session: its process group is it and its children
        # (a supervisor's workers outlive a killed supervisor).
        for sig in (signal.SIGCONT, signal.SIGKILL):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, sig)
        proc.wait(10)
