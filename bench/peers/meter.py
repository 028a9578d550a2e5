"""What the Redis server did during a workload: commands (``INFO commandstats``) and CPU
time (``INFO cpu``), reset with ``CONFIG RESETSTAT`` before it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import redis

#: The meter's own commands, not counted.
OWN = ("info", "config|resetstat", "flushall", "ping")


@dataclass(frozen=True, slots=True)
class Work:
    """Server work between :meth:`RedisMeter.reset` and :meth:`RedisMeter.read`."""

    commands: int
    cpu_seconds: float
    by_command: dict[str, int]

    def per_job(self, jobs: int) -> dict[str, Any]:
        """Commands and CPU microseconds per job."""
        jobs = max(jobs, 1)
        top = sorted(self.by_command.items(), key=lambda kv: -kv[1])[:8]
        return {
            "redis_commands_per_job": self.commands / jobs,
            "redis_cpu_us_per_job": self.cpu_seconds / jobs * 1e6,
            "redis_top_commands_per_job": {name: calls / jobs for name, calls in top},
        }


class RedisMeter:
    """A plain client of the harness's Redis, for INFO, RESETSTAT and FLUSHALL.

    Args:
        url: the server.
    """

    def __init__(self, url: str) -> None:
        self.client = redis.Redis.from_url(url)
        self._cpu = 0.0

    def _cpu_now(self) -> float:
        info = self.client.info("cpu")
        return float(info["used_cpu_user"]) + float(info["used_cpu_sys"])

    def flush(self) -> None:
        """Empty the server between workloads."""
        self.client.flushall()

    def reset(self) -> None:
        """Start counting."""
        self.client.config_resetstat()
        self._cpu = self._cpu_now()

    def read(self) -> Work:
        """What the server did since :meth:`reset`."""
        cpu = self._cpu_now() - self._cpu
        stats = self.client.info("commandstats")
        by_command = {
            name.removeprefix("cmdstat_"): int(value["calls"])
            for name, value in stats.items()
            if name.removeprefix("cmdstat_") not in OWN
        }
        return Work(sum(by_command.values()), cpu, by_command)

    def server(self) -> dict[str, str]:
        """Version and the persistence settings in force."""
        info = self.client.info("server")
        config = self.client.config_get("append*")
        return {
            "redis_version": str(info["redis_version"]),
            **{k: str(v) for k, v in config.items()},
        }

    def used_mb(self) -> float:
        """The server's memory in use (``used_memory``), in MB."""
        return int(self.client.info("memory")["used_memory"]) / 2**20

    def close(self) -> None:
        self.client.close()
