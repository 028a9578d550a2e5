"""The bench's own checks: each job completed exactly once, and the store is durable."""

from __future__ import annotations

from pathlib import Path

import pytest

from conveyor import benchmark_env
from conveyor.benchmark_check import verify
from conveyor.benchmark_env import describe_store, filesystem_of
from conveyor.errors import BenchmarkError
from conveyor.job import Job, JobStatus


def _job(job_id: str, status: JobStatus = JobStatus.COMPLETED, attempts: int = 1) -> Job:
    job = Job(id=job_id, type="noop", queue="q")
    job.status, job.attempts = status, attempts
    return job


IDS = ["a", "b", "c"]


def test_jobs_that_each_completed_once_pass() -> None:
    records = [_job(i) for i in IDS]
    assert verify(IDS, records, dict.fromkeys(IDS, 1)) == []


@pytest.mark.parametrize(
    ("records", "runs", "problem"),
    [
        ([_job("a"), _job("b")], {"a": 1, "b": 1}, "1 jobs have no record (e.g. c)"),
        (
            [_job("a"), _job("b", JobStatus.FAILED), _job("c")],
            {"a": 1, "b": 1, "c": 1},
            "1 jobs failed (e.g. b)",
        ),
        (
            [_job("a"), _job("b", JobStatus.PENDING, 0), _job("c")],
            {"a": 1, "c": 1},
            "1 jobs did not finish (e.g. b)",
        ),
        # A lease that ran out: the store handed the job out a second time.
        ([_job("a"), _job("b", attempts=2), _job("c")], dict.fromkeys(IDS, 1), "more than one"),
        # Run twice within one attempt: only the tasks' own tally can tell.
        ([_job(i) for i in IDS], {"a": 1, "b": 2, "c": 1}, "1 jobs ran more than once (e.g. b)"),
        ([_job(i) for i in IDS], {"a": 1, "c": 1}, "1 jobs completed without a recorded run"),
        (
            [*(_job(i) for i in IDS), _job("x")],
            dict.fromkeys(IDS, 1),
            "1 records were never enqueued (e.g. x)",
        ),
        ([_job(i) for i in IDS], {"a": 1, "b": 1, "c": 1, "y": 1}, "1 runs are of jobs never"),
    ],
)
def test_each_way_a_job_can_go_wrong_is_named(
    records: list[Job], runs: dict[str, int], problem: str
) -> None:
    problems = verify(IDS, records, runs)
    assert any(p.startswith(problem) or problem in p for p in problems), problems


def test_delayed_jobs_must_not_have_run() -> None:
    records = [_job("a"), _job("later", JobStatus.PENDING, 0)]
    assert verify(["a"], records, {"a": 1}, not_due=["later"]) == []
    assert verify(["a"], records, {"a": 1, "later": 1}, not_due=["later"]) == [
        "1 delayed jobs ran early (e.g. later)"
    ]


def test_filesystem_of_reads_the_mount_table() -> None:
    if not Path("/proc/mounts").exists():
        pytest.skip("no /proc/mounts on this system")
    assert filesystem_of("/proc/self") == "proc"


async def test_a_sqlite_file_in_memory_is_refused_unless_allowed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(benchmark_env, "filesystem_of", lambda path: "tmpfs")
    url = f"sqlite:///{tmp_path / 'b.db'}"
    with pytest.raises(BenchmarkError, match="on tmpfs, in memory"):
        await describe_store(url)
    store = await describe_store(url, allow_memory_fs=True)
    assert (store["filesystem"], store["durable"]) == ("tmpfs", False)
