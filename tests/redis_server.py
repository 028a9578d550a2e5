"""Redis servers that tests start, own and stop: never port 6379, never a server the test
did not start. A missing ``redis-server`` is a failure naming the package, not a skip."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

import pytest

MISSING = (
    "redis-server is not installed: the Redis tests need it "
    "(Debian/Ubuntu: `apt-get install -y redis-server`, which `make test` runs as root; "
    "the package also provides redis-cli)"
)


def require(binary: str = "redis-server") -> str:
    """The binary's path; fails the test when it is missing."""
    path = shutil.which(binary) or (
        f"/usr/bin/{binary}" if os.path.exists(f"/usr/bin/{binary}") else None
    )
    if path is None:
        pytest.fail(MISSING, pytrace=False)
    return path


def free_port(highest: int = 65535) -> int:
    """A free loopback port (never 6379), at most ``highest``."""
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
        if port != 6379 and port <= highest:
            return port


class RedisServer:
    """One ``redis-server`` process on a free loopback port, in its own directory.

    Args:
        directory: where it keeps its AOF and log.
        args: extra server arguments (``--cluster-enabled yes`` ...).
        port: the port; a free one when omitted.
    """

    def __init__(self, directory: Path, *args: str, port: int | None = None) -> None:
        self.directory = directory
        self.args = list(args)
        # A cluster node also listens on port + 10000 (the cluster bus).
        self.port = port or free_port(55535 if "--cluster-enabled" in args else 65535)
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 10.0) -> RedisServer:
        """Start the server and wait until it answers PING."""
        binary = require()
        self.directory.mkdir(parents=True, exist_ok=True)
        command = [
            binary,
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--dir", str(self.directory),
            "--logfile", "redis.log",
            *self.args,
        ]  # fmt: skip
        self.process = subprocess.Popen(
            command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                log = (self.directory / "redis.log").read_text(errors="replace")[-2000:]
                raise RuntimeError(f"redis-server exited ({self.process.returncode}): {log}")
            if self.ping():
                return self
            time.sleep(0.02)
        self.kill()
        raise RuntimeError(f"redis-server on port {self.port} did not answer in {timeout}s")

    def ping(self) -> bool:
        """True when the server answers PING (plain RESP over a socket)."""
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
                sock.sendall(b"PING\r\n")
                return sock.recv(16).startswith(b"+PONG")
        except OSError:
            return False

    def cli(self, *args: str) -> str:
        """Run ``redis-cli`` against this server and return its output."""
        command = [require("redis-cli"), "-p", str(self.port), *args]
        return subprocess.run(command, capture_output=True, text=True, check=True).stdout

    def _signal(self, sig: signal.Signals) -> None:
        if self.process is not None and self.process.poll() is None:
            os.kill(self.process.pid, sig)

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then wait."""
        self.resume()
        self._signal(signal.SIGTERM)
        self._wait()

    def kill(self) -> None:
        """Kill at once (SIGKILL): what a crash looks like."""
        self._signal(signal.SIGKILL)
        self._wait()

    def pause(self) -> None:
        """Freeze the process (SIGSTOP)."""
        self._signal(signal.SIGSTOP)

    def resume(self) -> None:
        """Thaw a paused process (SIGCONT)."""
        self._signal(signal.SIGCONT)

    def _wait(self) -> None:
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)
            self.process = None


class RedisClusterServers:
    """A local three-master Redis Cluster (no replicas) of :class:`RedisServer`.

    Args:
        directory: parent of the three servers' directories.
    """

    def __init__(self, directory: Path, masters: int = 3) -> None:
        self.nodes = [
            RedisServer(
                directory / f"node{i}",
                "--cluster-enabled",
                "yes",
                "--cluster-config-file",
                "nodes.conf",
                "--cluster-node-timeout",
                "5000",
            )
            for i in range(masters)
        ]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.nodes[0].port}/0?cluster=1"

    def start(self, timeout: float = 30.0) -> RedisClusterServers:
        """Start the nodes, create the cluster and wait for ``cluster_state:ok``."""
        try:
            return self._start(timeout)
        except BaseException:
            self.stop()
            raise

    def _start(self, timeout: float) -> RedisClusterServers:
        for node in self.nodes:
            node.start()
        addresses = [f"127.0.0.1:{node.port}" for node in self.nodes]
        command = [require("redis-cli"), "--cluster", "create", *addresses,
                   "--cluster-replicas", "0", "--cluster-yes"]  # fmt: skip
        subprocess.run(command, capture_output=True, text=True, check=True, timeout=timeout)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in node.cli("cluster", "info") for node in self.nodes):
                return self
            time.sleep(0.1)
        raise RuntimeError("the local Redis Cluster did not reach cluster_state:ok")

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
