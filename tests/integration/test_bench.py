"""`conveyor bench`: it reports figures only for jobs that each completed exactly once, and
says where they were measured."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from conveyor.benchmark_env import MEMORY_FILESYSTEMS, filesystem_of
from tests.integration.test_cli import cli
from tests.redis_server import RedisServer

pytestmark = pytest.mark.timeout(180)

#: A small run: 300 jobs drained, about 100 at a steady rate, nothing else.
SMALL = ("--jobs", "300", "--rate", "200", "--latency-seconds", "0.5", "--no-io")


def _bench(url: str, out: Path, *extra: str, env: dict[str, str] | None = None) -> Any:
    return cli(
        "bench", "--url", url, *SMALL, "--json", str(out), *extra, env=env or {}, timeout=150
    )


def test_bench_writes_its_figures_and_where_it_ran(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _bench(f"sqlite:///{tmp_path / 'b.db'}", out, "--allow-tmpfs")
    assert done.returncode == 0, done.stderr
    report = json.loads(out.read_text())
    figures = {(f["scenario"], f["name"]): f["value"] for f in report["figures"]}
    assert figures[("drain", "drain rate")] > 0
    assert figures[("enqueue", "enqueue_many")] > 0
    p50 = figures[("latency at 200/s", "queue wait p50")]
    assert 0 <= p50 <= figures[("latency at 200/s", "queue wait max")]
    assert figures[("drain", "worker peak RSS")] > 10
    assert "drain rate" in done.stdout
    assert "Every job completed exactly once." in done.stdout
    # Checked: all 300 drained jobs, and the steady ones plus the warm-up job.
    assert report["verified"]["drain"] == 300
    assert report["verified"]["latency at 200/s"] >= 90

    env = report["environment"]
    assert set(env) >= {"date", "code", "python", "platform", "cpu", "load_average"}
    assert len(env["code"]["commit"]) == 40  # this is a git checkout
    assert env["python"]["implementation"] == "CPython"
    assert env["cpu"]["count"] >= 1
    assert env["cpu"]["model"]
    speed = env["host_speed_s"]
    assert speed["additions"] == 5_000_000
    assert 0 < speed["before"] < 30
    assert 0 < speed["after"] < 30
    store = env["store"]
    assert store["kind"] == "sqlite"
    assert store["synchronous"] == "FULL"
    assert store["filesystem"] == filesystem_of(str(tmp_path))
    assert store["durable"] is (store["filesystem"] not in MEMORY_FILESYSTEMS)


def test_bench_refuses_a_rate_when_a_job_fails(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    done = _bench(
        f"sqlite:///{tmp_path / 'b.db'}",
        out,
        "--allow-tmpfs",
        env={"CONVEYOR_BENCH_FAIL_EVERY": "100"},  # every 100th run in a worker raises
    )
    assert done.returncode == 1
    assert "drain: not every job completed exactly once" in done.stderr
    assert "3 jobs failed" in done.stderr
    assert "failure injected" in done.stderr
    assert "jobs/s" not in done.stdout
    assert not out.exists()


def test_bench_on_redis_records_its_version_and_persistence(
    tmp_path: Path, redis_server: RedisServer
) -> None:
    out = tmp_path / "bench.json"
    done = _bench(redis_server.url, out)
    assert done.returncode == 0, done.stderr
    store = json.loads(out.read_text())["environment"]["store"]
    assert store["kind"] == "redis"
    assert store["redis_version"].count(".") == 2
    assert store["appendonly"] == "yes"  # the test server runs with AOF
    assert {"appendfsync", "save", "durable"} <= set(store)
