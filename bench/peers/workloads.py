"""The workloads, each run for one system at a time on an emptied Redis.

A workload function takes a :class:`Session` (the system's client, the meter, the sizes)
and returns rows: ``{"workload", "valid", "check", "figures", "config"}``. Adding a
workload is adding a function here and its name to :data:`WORKLOADS`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.peers import stats
from bench.peers.meter import RedisMeter, Work
from bench.peers.procs import Client, Completions, Worker, environment
from bench.peers.systems.base import MULTIPROCESS, SQLITE
from bench.peers.tasks import IO_SLEEP

#: Job numbers below zero are warm-up jobs, outside every check.
WARMUP = -1


@dataclass
class Sizes:
    """How big each workload is (``--jobs``, ``--seconds``, ...)."""

    jobs: int = 20_000
    io_jobs_per_slot: int = 40
    seconds: float = 8.0
    one_at_a_time: int = 2_000
    timeout: float = 90.0
    grace: float = 10.0
    batch: int = 1_000


@dataclass
class Session:
    """One system's run of one workload: its client, its counter files, its logs.

    Args:
        system: the system's name.
        redis_url: the harness's Redis.
        meter: a client of that Redis.
        directory: this workload's directory (counter files and logs).
        sizes: the workload sizes.
        workload: its name, for the environment it asks of the client and worker.
    """

    system: str
    redis_url: str
    meter: RedisMeter
    directory: Path
    sizes: Sizes
    workload: str = ""
    client: Client = field(init=False)
    completions: Completions = field(init=False)

    def __post_init__(self) -> None:
        counter_dir = self.directory / "counter"
        counter_dir.mkdir(parents=True, exist_ok=True)
        self.env = environment(self.redis_url, counter_dir, ENVIRONMENT.get(self.workload))
        self.completions = Completions(counter_dir)
        self.meter.flush()
        self.client = Client(self.system, self.env, self.directory / "client.log")

    def worker(self, kind: str, concurrency: int = 0, processes: int = 1) -> tuple[Worker, str]:
        """Start the system's worker for ``kind`` jobs; returns it and its configuration."""
        spec = self.client.request(
            "worker", kind=kind, concurrency=concurrency, processes=processes
        )
        worker = Worker(spec["argv"], {**self.env, **spec["env"]}, self.directory / "worker.log")
        return worker, spec["config"]

    def warm_up(self, worker: Worker) -> bool:
        """One job through the started worker, so that start-up is not measured."""
        self.client.request("enqueue_many", kind="noop", start=WARMUP, count=1, batch=1)
        deadline = time.monotonic() + self.sizes.timeout
        return self.completions.wait(1, deadline, worker)

    def records(self) -> list[stats.Record]:
        """Completions of timed jobs (warm-ups left out)."""
        self.completions.poll()
        return [r for r in stats.parse(self.completions.lines()) if r.number >= 0]

    def close(self) -> None:
        self.client.close()


def row(
    workload: str,
    verdict: stats.Verdict,
    figures: dict[str, Any],
    config: str,
    check: str | None = None,
) -> dict[str, Any]:
    """A result row; figures of an invalid row are kept but marked.

    A drain that ran out of time with no job done twice is told apart from a lost job:
    its figures cover the jobs that ran (``partial``), its check says how far it got.
    """
    check = check or verdict.describe()
    if figures.get("timed_out") and not (verdict.duplicated or verdict.unexpected):
        done, expected = verdict.expected - verdict.missing, verdict.expected
        check = f"TIMED OUT: {done:,} of {expected:,} jobs done in time, none twice"
        figures["partial"] = True
    return {
        "workload": workload,
        "valid": verdict.ok,
        "check": check,
        "figures": figures,
        "config": config,
    }


def _drain(
    s: Session, kind: str, count: int, concurrency: int, processes: int = 1
) -> tuple[dict[str, Any], stats.Verdict, str]:
    """Start the worker on ``count`` queued jobs and time it until they are all done."""
    s.meter.reset()
    worker, config = s.worker(kind, concurrency, processes)
    try:
        finished = s.completions.wait(count, time.monotonic() + s.sizes.timeout, worker)
        time.sleep(0.2)  # a late duplicate shows up in the check
        rss = worker.peak_rss()
        work = s.meter.read()
    finally:
        worker.stop()
    records = s.records()
    verdict = stats.check_exactly_once(range(count), records)
    figures: dict[str, Any] = {
        "jobs_per_s": stats.drain_rate(records),
        "completed": len(records),
        "timed_out": not finished,
        "worker_rss_mb": rss["total_mb"],
        "worker_processes": rss["processes"],
        **work.per_job(count),
    }
    return figures, verdict, config


def _bulk_then_drain(
    s: Session, kind: str
) -> tuple[dict[str, Any], dict[str, Any], stats.Verdict, str]:
    """Bulk enqueue of ``jobs`` jobs of ``kind`` (timed), then one worker drains them.

    The drain is what shows that every enqueued job arrived once; one that timed out
    leaves the enqueue unverified as well.
    """
    n = s.sizes.jobs
    s.meter.reset()
    answer = s.client.request("enqueue_many", kind=kind, start=0, count=n, batch=s.sizes.batch)
    enqueue = {"jobs_per_s": n / answer["seconds"], **s.meter.read().per_job(n)}
    figures, verdict, config = _drain(s, kind, n, 0)
    enqueue["timed_out"] = figures["timed_out"]
    return enqueue, figures, verdict, config


def drain(s: Session) -> list[dict[str, Any]]:
    """Bulk enqueue of ``jobs`` no-op jobs, then one worker drains them."""
    enqueue, figures, verdict, config = _bulk_then_drain(s, "noop")
    return [
        row("enqueue", verdict, enqueue, s.client.hello["bulk"]),
        row("drain", verdict, figures, config),
    ]


def one_at_a_time(s: Session) -> list[dict[str, Any]]:
    """Sequential enqueue, one job per call, then drained (to check every job arrived)."""
    n = min(s.sizes.one_at_a_time, s.sizes.jobs)
    s.meter.reset()
    answer = s.client.request("enqueue_one", kind="noop", start=0, count=n, batch=1)
    figures = {"jobs_per_s": n / answer["seconds"], **s.meter.read().per_job(n)}
    _, verdict, _ = _drain(s, "noop", n, 0)
    return [row("enqueue_one", verdict, figures, "one enqueue call per job, awaited in turn")]


def io(concurrency: int) -> Callable[[Session], list[dict[str, Any]]]:
    """Queued 10 ms jobs drained at ``concurrency``."""

    def run(s: Session) -> list[dict[str, Any]]:
        n = min(s.sizes.jobs, concurrency * s.sizes.io_jobs_per_slot)
        s.client.request("enqueue_many", kind="io", start=0, count=n, batch=s.sizes.batch)
        figures, verdict, config = _drain(s, "io", n, concurrency)
        figures["ideal_jobs_per_s"] = concurrency / IO_SLEEP
        return [row(f"io{concurrency}", verdict, figures, config)]

    return run


def steady(rate: int) -> Callable[[Session], list[dict[str, Any]]]:
    """A producer at ``rate`` jobs/s for ``seconds``, on an absolute schedule."""

    def run(s: Session) -> list[dict[str, Any]]:
        worker, config = s.worker("noop")
        try:
            if not s.warm_up(worker):
                verdict = stats.Verdict(1, 1, 0, 0)
                return [
                    row(f"rate{rate}", verdict, {"error": "worker never ran a warm-up job"}, config)
                ]
            s.meter.reset()
            sent = s.client.request(
                "steady", kind="noop", start=0, rate=rate, seconds=s.sizes.seconds
            )
            grace = time.monotonic() + s.sizes.grace
            s.completions.wait(sent["sent"] + 1, grace, worker)
            gave_up_ns = time.time_ns()
            time.sleep(0.2)
            rss = worker.peak_rss()
            work = s.meter.read()
        finally:
            worker.stop()
        return [_steady_row(s, rate, sent, gave_up_ns, rss, work, config)]

    return run


def _steady_row(
    s: Session,
    rate: int,
    sent: dict[str, Any],
    gave_up_ns: int,
    rss: dict[str, Any],
    work: Work,
    config: str,
) -> dict[str, Any]:
    records = s.records()
    count = int(sent["sent"])
    verdict = stats.check_exactly_once(range(count), records)
    end_ns = int(sent["end_ns"])
    backlog = count - sum(1 for r in records if r.started_ns <= end_ns)
    unfinished = max(0, count - len({r.number for r in records}))
    held = stats.SteadyVerdict(rate, count / sent["seconds"], backlog, unfinished)
    censored = [(gave_up_ns - end_ns) / 1e6] * unfinished
    waits = stats.wait_summary([r.wait_ms for r in records], censored)
    figures = {
        "target_per_s": rate,
        "achieved_per_s": held.achieved_rate,
        "sent": count,
        "backlog_at_end": backlog,
        "unfinished": unfinished,
        "producer_kept_up": held.producer_kept_up,
        "worker_kept_up": held.worker_kept_up,
        "kept_up": held.kept_up,
        **{f"wait_{k}_ms": v for k, v in waits.items() if k != "lower_bound"},
        "wait_is_lower_bound": bool(waits["lower_bound"]),
        "worker_rss_mb": rss["total_mb"],
        **work.per_job(count),
    }
    # A worker that fell behind leaves jobs undone on purpose: that is "did not keep up",
    # not a lost job; duplicates and strangers still invalidate the row.
    if unfinished and verdict.missing == unfinished:
        verdict = stats.Verdict(
            verdict.expected - unfinished, 0, verdict.duplicated, verdict.unexpected
        )
        if verdict.ok:
            done = count - unfinished
            check = f"FELL BEHIND: {done:,} of {count:,} jobs done when the run stopped waiting"
            return row(f"rate{rate}", verdict, figures, config, check + ", none twice")
    return row(f"rate{rate}", verdict, figures, config)


def payload_1k(s: Session) -> list[dict[str, Any]]:
    """``drain`` with a 1 KB argument per job and a 1 KB result that each system stores."""
    enqueue, figures, verdict, config = _bulk_then_drain(s, "echo")
    figures["redis_used_mb"] = s.meter.used_mb()
    return [
        row("enqueue_1k", verdict, enqueue, s.client.hello["bulk"]),
        row("drain_1k", verdict, figures, config),
    ]


def sqlite_one_at_a_time(s: Session) -> list[dict[str, Any]]:
    """One-at-a-time enqueue on the system's SQLite store (fsync on), then drained."""
    (result,) = one_at_a_time(s)
    result["workload"] = "sqlite_enqueue_one"
    return [result]


def sqlite_steady(rate: int) -> Callable[[Session], list[dict[str, Any]]]:
    """Queue wait at ``rate`` jobs/s on the system's SQLite store, worker in another process."""
    on_redis = steady(rate)

    def run(s: Session) -> list[dict[str, Any]]:
        (result,) = on_redis(s)
        result["workload"] = f"sqlite_rate{rate}"
        return [result]

    return run


def drain_processes(processes: int) -> Callable[[Session], list[dict[str, Any]]]:
    """Twice ``jobs`` no-op jobs drained by one worker command of ``processes`` processes."""

    def run(s: Session) -> list[dict[str, Any]]:
        n = 2 * s.sizes.jobs
        s.client.request("enqueue_many", kind="noop", start=0, count=n, batch=s.sizes.batch)
        figures, verdict, config = _drain(s, "noop", n, 0, processes)
        return [row(f"drain{processes}", verdict, figures, config)]

    return run


#: Workloads that only some systems run.
ONLY = {"drain2": MULTIPROCESS, "sqlite_one": SQLITE, "sqlite_rate200": SQLITE}

#: What a workload asks of its client's and worker's environment.
ENVIRONMENT = {
    "payload1k": {"PEERS_RESULTS": "1"},
    "sqlite_one": {"PEERS_STORE": "sqlite"},
    "sqlite_rate200": {"PEERS_STORE": "sqlite"},
}

#: Every workload by name, in the order a round runs them.
WORKLOADS: dict[str, Callable[[Session], list[dict[str, Any]]]] = {
    "drain": drain,
    "io100": io(100),
    "io500": io(500),
    "rate1000": steady(1000),
    "rate5000": steady(5000),
    "rate10000": steady(10000),
    "enqueue_one": one_at_a_time,
    "payload1k": payload_1k,
    "drain2": drain_processes(2),
    "sqlite_one": sqlite_one_at_a_time,
    "sqlite_rate200": sqlite_steady(200),
}
