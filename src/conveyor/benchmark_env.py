"""Where a benchmark ran: the code, the host, its speed that day, and the store's durability.

A figure means little without these: the same code drains two or three times faster on a
fast day of a shared VM than on a slow one, and a store that never reaches a disk
(SQLite on tmpfs, Redis without AOF) is not measuring what production pays for.
"""

from __future__ import annotations

import os
import platform
import subprocess
import time
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path
from typing import Any

from conveyor.backends.sqlite._conn import parse_sqlite_url
from conveyor.errors import BenchmarkError

#: File systems that keep files in memory: a figure measured there is not a durable one.
MEMORY_FILESYSTEMS = frozenset({"tmpfs", "ramfs"})
#: The host-speed reference: a fixed pure-Python loop of this many additions.
SPEED_LOOP = 5_000_000


def host_speed() -> float:
    """Seconds this host takes for :data:`SPEED_LOOP` additions in a Python loop.

    It is the reference beside every figure: on a shared VM it varies by up to 3× from
    day to day, and the figures move with it.
    """
    started = time.perf_counter()
    total = 0
    for i in range(SPEED_LOOP):
        total += i
    return time.perf_counter() - started


def describe_host() -> dict[str, Any]:
    """The code and the machine: commit (or version), Python, platform, CPU, load, date."""
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "code": _code_version(),
        "python": {
            "version": platform.python_version(),
            "implementation": platform.python_implementation(),
        },
        "platform": platform.platform(),
        "cpu": {"model": _cpu_model(), "count": os.cpu_count()},
        "load_average": list(os.getloadavg()),
    }


def _code_version() -> dict[str, Any]:
    """The git commit of the running code if it is a checkout, else the package version."""
    source = Path(__file__).resolve().parent
    try:
        commit = _git(source, "rev-parse", "HEAD")
        changed = _git(source, "status", "--porcelain", "--untracked-files=no")
        return {"commit": commit, "uncommitted_changes": bool(changed)}
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return {"version": metadata.version("conveyor")}
    except metadata.PackageNotFoundError:
        return {"version": "unknown"}


def _git(directory: Path, *args: str) -> str:
    done = subprocess.run(
        ["git", "-C", str(directory), *args],
        capture_output=True,
        text=True,
        timeout=10,
        check=True,
    )
    return done.stdout.strip()


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def filesystem_of(path: str) -> str:
    """The type of the file system holding ``path`` (from ``/proc/mounts``; Linux)."""
    target = os.path.realpath(path)
    best, kind = "", "unknown"
    try:
        mounts = Path("/proc/mounts").read_text().splitlines()
    except OSError:
        return kind
    for line in mounts:
        fields = line.split()
        if len(fields) < 3:
            continue
        point = fields[1].replace("\\040", " ")
        inside = target == point or target.startswith(point.rstrip("/") + "/")
        if inside and len(point) >= len(best):
            best, kind = point, fields[2]
    return kind


async def describe_store(url: str, *, allow_memory_fs: bool = False) -> dict[str, Any]:
    """The store's kind, version and what makes it durable.

    Raises:
        BenchmarkError: a SQLite file on tmpfs or ramfs, unless ``allow_memory_fs``.
    """
    if url.startswith("sqlite:"):
        return _describe_sqlite(url, allow_memory_fs)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return await _describe_redis(url)
    return {"kind": "memory", "durable": False}


def _describe_sqlite(url: str, allow_memory_fs: bool) -> dict[str, Any]:
    import sqlite3

    options = parse_sqlite_url(url)
    filesystem = filesystem_of(os.path.dirname(options.path))
    in_memory = filesystem in MEMORY_FILESYSTEMS
    if in_memory and not allow_memory_fs:
        raise BenchmarkError(
            f"the SQLite file {options.path} is on {filesystem}, in memory: its figures "
            "would not be durable ones. Put it on a disk (--url sqlite:////disk/path.db), "
            "or pass --allow-tmpfs to measure anyway (the report marks it not durable)"
        )
    return {
        "kind": "sqlite",
        "sqlite_version": sqlite3.sqlite_version,
        "path": options.path,
        "filesystem": filesystem,
        "journal_mode": "wal",
        "synchronous": options.synchronous,
        "durable": not in_memory,
    }


async def _describe_redis(url: str) -> dict[str, Any]:
    import redis.asyncio as aioredis
    from redis.exceptions import RedisError

    client = aioredis.Redis.from_url(url.split("?")[0], decode_responses=True)
    out: dict[str, Any] = {"kind": "redis"}
    try:
        out["redis_version"] = (await client.info("server"))["redis_version"]
        try:
            config = await client.config_get("appendonly")
            for key in ("appendfsync", "save", "dir"):
                config.update(await client.config_get(key))
        except RedisError as exc:  # CONFIG is often renamed or denied on managed Redis
            out["config"] = f"unknown ({exc})"
        else:
            out.update({k: config.get(k) for k in ("appendonly", "appendfsync", "save")})
            out["durable"] = config.get("appendonly") == "yes"
            if _is_local(url):
                out["dir_filesystem"] = filesystem_of(config.get("dir", ""))
                out["durable"] = out["durable"] and out["dir_filesystem"] not in (
                    MEMORY_FILESYSTEMS
                )
    finally:
        await client.aclose()
    return out


def _is_local(url: str) -> bool:
    host = url.split("://", 1)[1].split("/", 1)[0].rsplit("@", 1)[-1].rsplit(":", 1)[0]
    return url.startswith("unix://") or host in {"127.0.0.1", "localhost", "[::1]"}


async def describe(url: str, *, allow_memory_fs: bool = False) -> dict[str, Any]:
    """Everything above for a run on ``url``, the host speed measured now (``before``);
    :func:`note_speed_after` adds the speed at the end of the run.

    Raises:
        BenchmarkError: see :func:`describe_store`.
    """
    store = await describe_store(url, allow_memory_fs=allow_memory_fs)
    speed = {"additions": SPEED_LOOP, "before": host_speed()}
    return {**describe_host(), "store": store, "host_speed_s": speed}


def note_speed_after(environment: dict[str, Any]) -> None:
    """Measure the host speed again at the end of a run (it drifts within minutes too)."""
    environment["host_speed_s"]["after"] = host_speed()
