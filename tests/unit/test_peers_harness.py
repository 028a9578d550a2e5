"""The peers benchmark harness (``bench/peers``): its arithmetic on crafted data, its
completion counter, and one small run of the Conveyor adapter against a real Redis."""

from __future__ import annotations

import math
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bench.peers import client, counter, procs, report, stats, workloads
from bench.peers.meter import RedisMeter

from tests.redis_server import RedisServer


def rec(number: int, enqueued: int = 0, started: int = 0, finished: int = 0) -> stats.Record:
    return stats.Record(number, enqueued, started, finished)


def test_exactly_once_passes_when_every_timed_job_completed_once() -> None:
    records = [rec(n) for n in range(5)] + [rec(workloads.WARMUP)]
    verdict = stats.check_exactly_once(range(5), records)
    assert verdict.ok
    assert verdict.describe().startswith("ok: 5 jobs")


def test_exactly_once_names_missing_duplicated_and_unexpected_jobs() -> None:
    records = [rec(0), rec(1), rec(1), rec(1), rec(3), rec(7)]
    verdict = stats.check_exactly_once(range(5), records)
    assert (verdict.missing, verdict.duplicated, verdict.unexpected) == (2, 1, 1)
    assert not verdict.ok
    assert verdict.describe() == (
        "INVALID: of 5 jobs, 2 missing, 1 completed more than once, 1 unexpected"
    )


def test_percentile_is_nearest_rank() -> None:
    values = [float(v) for v in range(100, 0, -1)]  # unordered on purpose
    assert stats.percentile(values, 0.50) == 50
    assert stats.percentile(values, 0.99) == 99
    assert stats.percentile(values, 1.0) == 100
    assert stats.percentile([7.0], 0.5) == 7
    assert math.isnan(stats.percentile([], 0.5))


def test_wait_summary_marks_a_quantile_reaching_unstarted_jobs_as_a_lower_bound() -> None:
    started = [1.0] * 98
    assert stats.wait_summary(started)["lower_bound"] == 0.0
    summary = stats.wait_summary(started, censored_ms=[5000.0, 5000.0])
    assert summary["p50"] == 1.0
    assert summary["p99"] == 5000.0
    assert summary["lower_bound"] == 1.0


def test_record_wait_and_drain_rate_come_from_the_counters_timestamps() -> None:
    records = [rec(0, 0, 2_000_000, 3_000_000), rec(1, 0, 500_000_000, 1_002_000_000)]
    assert records[0].wait_ms == 2.0
    assert stats.drain_rate(records) == pytest.approx(2 / 1.0)
    assert stats.drain_rate([]) == 0.0


@pytest.mark.parametrize(
    ("achieved", "backlog", "unfinished", "producer", "worker"),
    [
        (1000.0, 0, 0, True, True),
        (1000.0, 100, 0, True, True),  # what arrives in 100 ms may be in flight
        (1000.0, 101, 0, True, False),
        (1000.0, 0, 1, True, False),
        (940.0, 0, 0, False, True),
    ],
)
def test_kept_up_separates_the_producer_from_the_worker(
    achieved: float, backlog: int, unfinished: int, producer: bool, worker: bool
) -> None:
    verdict = stats.SteadyVerdict(1000, achieved, backlog, unfinished)
    assert (verdict.producer_kept_up, verdict.worker_kept_up) == (producer, worker)
    assert verdict.kept_up == (producer and worker)


def test_steady_schedule_is_absolute_not_drifting() -> None:
    began = time.perf_counter() - 2.5
    count, _ = client.due(began, 0, 10, 1.0)
    assert count == 3  # jobs due at 0, 1 and 2 s, sent at once after a late wake-up
    count, wait = client.due(began, 3, 10, 1.0)
    assert count == 0
    assert wait == pytest.approx(0.5, abs=0.05)
    assert client.due(began, 0, 2, 1.0)[0] == 2  # never past the total


def test_counter_records_reach_the_file_and_parse_back(tmp_path: Path) -> None:
    code = (
        "from bench.peers import counter\n"
        "for n in range(1000):\n"
        "    counter.record(n, 5, 7)\n"
        "counter.flush()\n"
    )
    env = procs.environment("redis://unused", tmp_path)
    subprocess.run([sys.executable, "-c", code], env=env, cwd=procs.ROOT, check=True)
    seen = procs.Completions(tmp_path)
    assert seen.poll() == 1000
    records = stats.parse(seen.lines())
    assert stats.check_exactly_once(range(1000), records).ok
    assert all(r.enqueued_ns == 5 and r.started_ns == 7 for r in records)
    assert counter.BATCH < 1000  # the batch path ran, not only the final flush


def test_completions_wait_for_a_torn_line_to_be_finished(tmp_path: Path) -> None:
    path = tmp_path / "1.log"
    path.write_bytes(b"1 2 3 4\n5 6")
    seen = procs.Completions(tmp_path)
    assert seen.poll() == 1
    with path.open("ab") as f:
        f.write(b" 7 8\n")
    assert seen.poll() == 2
    assert [r.number for r in stats.parse(seen.lines())] == [1, 5]


@pytest.fixture
def conveyor_session(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[workloads.Session]:
    """The Conveyor adapter run from this virtualenv, on a Redis of its own (the harness
    empties its server between workloads)."""
    monkeypatch.setitem(procs.INTERPRETERS, "conveyor", sys.executable)
    server = RedisServer(tmp_path / "redis").start()
    sizes = workloads.Sizes(jobs=300, seconds=1.0, timeout=30.0)
    meter = RedisMeter(server.url)
    session = workloads.Session("conveyor", server.url, meter, tmp_path / "run", sizes)
    try:
        yield session
    finally:
        session.close()
        meter.close()
        server.stop()


@pytest.mark.slow
def test_conveyor_adapter_drains_every_job_exactly_once(
    conveyor_session: workloads.Session,
) -> None:
    enqueue, drain = workloads.drain(conveyor_session)
    assert drain["valid"], drain["check"]
    assert drain["figures"]["completed"] == 300
    assert drain["figures"]["jobs_per_s"] > 0
    assert drain["figures"]["worker_rss_mb"] > 0
    assert enqueue["figures"]["redis_commands_per_job"] > 0


@pytest.mark.slow
def test_conveyor_adapter_holds_a_steady_rate(conveyor_session: workloads.Session) -> None:
    (result,) = workloads.steady(200)(conveyor_session)
    assert result["valid"], result["check"]
    figures = result["figures"]
    assert figures["sent"] == 200
    assert figures["unfinished"] == 0
    assert 0 < figures["wait_p50_ms"] <= figures["wait_p99_ms"] <= figures["wait_max_ms"]


def _results(drain: dict[str, list[float]], enqueue: dict[str, list[float]]) -> report.Results:
    rows = [
        {"system": s, "workload": w, "round": i, "valid": True, "figures": {"jobs_per_s": v}}
        for w, values in (("drain", drain), ("enqueue", enqueue))
        for s, series in values.items()
        for i, v in enumerate(series, 1)
    ]
    return report.Results({"rows": rows, "versions": {}})


def test_report_claims_a_lead_only_where_the_rounds_do_not_overlap() -> None:
    res = _results(
        drain={"conveyor": [20_000.0, 18_000.0], "huey": [5_000.0, 6_000.0], "rq": [400.0]},
        enqueue={"conveyor": [10_000.0, 12_000.0], "huey": [11_000.0, 30_000.0]},
    )
    found = {c.label: (c.peer, c.standing) for c in report.comparisons(res)}
    assert found["drain"] == ("huey", "leads")
    assert found["bulk enqueue"] == ("huey", "even")  # 11,000–30,000 overlaps 10,000–12,000
    behind = _results(
        drain={"conveyor": [1_000.0, 1_200.0], "huey": [5_000.0, 6_000.0]}, enqueue={}
    )
    (only,) = report.comparisons(behind)
    assert (only.peer, only.standing, only.mine, only.theirs) == ("huey", "trails", 1_100, 5_500)


def test_report_rewrites_only_its_own_section(tmp_path: Path) -> None:
    doc = tmp_path / "doc.md"
    doc.write_text("# Title\n\nanchor line\n\nthe rest\n")
    report.splice(doc, ["first"], anchor="anchor line")
    report.splice(doc, ["second"], anchor="anchor line")
    text = doc.read_text()
    assert text.count(report.BEGIN) == 1
    assert "second" in text
    assert "first" not in text
    assert text.startswith("# Title\n\nanchor line\n\n<!-- peers:begin -->")
    assert text.endswith("<!-- peers:end -->\n\nthe rest\n")
