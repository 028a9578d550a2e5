"""The harness's arithmetic, free of I/O: records, the exactly-once check, rates,
percentiles and whether a worker kept up with a steady arrival rate.

Everything the driver prints as a figure passes through here, and ``tests/unit/
test_peers_stats.py`` checks it on crafted data.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

#: Quantiles reported for queue wait.
QUANTILES = (("p50", 0.50), ("p95", 0.95), ("p99", 0.99), ("max", 1.0))


@dataclass(frozen=True, slots=True)
class Record:
    """One completion, as the counter wrote it (``time.time_ns()`` values)."""

    number: int
    enqueued_ns: int
    started_ns: int
    finished_ns: int

    @property
    def wait_ms(self) -> float:
        """Queue wait: the task's start minus the enqueue time it was given."""
        return (self.started_ns - self.enqueued_ns) / 1e6


def parse(lines: Iterable[bytes]) -> list[Record]:
    """Records from the counter's lines; a torn or blank line is skipped."""
    records = []
    for line in lines:
        fields = line.split()
        if len(fields) == 4:
            records.append(Record(*(int(f) for f in fields)))
    return records


@dataclass(frozen=True, slots=True)
class Verdict:
    """What the exactly-once check found.

    Args:
        expected: how many jobs were timed.
        missing: expected jobs with no completion.
        duplicated: expected jobs completed more than once (each counted once).
        unexpected: completions of numbers nobody sent.
    """

    expected: int
    missing: int
    duplicated: int
    unexpected: int

    @property
    def ok(self) -> bool:
        return not (self.missing or self.duplicated or self.unexpected)

    def describe(self) -> str:
        """One line for a report: "ok" or what went wrong."""
        if self.ok:
            return f"ok: {self.expected:,} jobs, each completed exactly once"
        problems = [
            f"{count:,} {what}"
            for count, what in (
                (self.missing, "missing"),
                (self.duplicated, "completed more than once"),
                (self.unexpected, "unexpected"),
            )
            if count
        ]
        return f"INVALID: of {self.expected:,} jobs, " + ", ".join(problems)


def check_exactly_once(expected: range, records: Sequence[Record]) -> Verdict:
    """Whether every number in ``expected`` completed exactly once, and nothing else did.

    Args:
        expected: the job numbers the run timed (warm-up jobs lie outside it).
        records: every completion the counter wrote.
    """
    counts = Counter(r.number for r in records if r.number in expected)
    unexpected = sum(1 for r in records if r.number not in expected and r.number >= 0)
    return Verdict(
        expected=len(expected),
        missing=len(expected) - len(counts),
        duplicated=sum(1 for c in counts.values() if c > 1),
        unexpected=unexpected,
    )


def drain_rate(records: Sequence[Record]) -> float:
    """Jobs per second from the first start to the last finish (worker start-up excluded)."""
    if not records:
        return 0.0
    first = min(r.started_ns for r in records)
    last = max(r.finished_ns for r in records)
    return len(records) / max((last - first) / 1e9, 1e-9)


def percentile(values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0..1) by nearest rank: the smallest value with at least
    ``q`` of the values at or below it; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(q * len(ordered)))
    return ordered[rank - 1]


def wait_summary(waits_ms: Sequence[float], censored_ms: Sequence[float] = ()) -> dict[str, float]:
    """p50/p95/p99/max of queue wait in ms.

    Args:
        waits_ms: the waits of jobs that started.
        censored_ms: for jobs that never started, how long they had waited when the run
            gave up: a lower bound of their wait, so a quantile that reaches one of them
            is a lower bound too (``lower_bound`` says so).
    """
    values = [*waits_ms, *censored_ms]
    summary = {name: percentile(values, q) for name, q in QUANTILES}
    floor = min(censored_ms, default=math.inf)
    summary["lower_bound"] = float(bool(censored_ms) and summary["p99"] >= floor)
    return summary


@dataclass(frozen=True, slots=True)
class SteadyVerdict:
    """Whether a steady-rate run held its rate: the producer and the worker apart.

    Args:
        target_rate: jobs per second asked of the producer.
        achieved_rate: jobs per second the producer sent.
        backlog_at_end: jobs sent but not yet started when the producer stopped.
        unfinished: jobs still not done when the run stopped waiting.
    """

    target_rate: float
    achieved_rate: float
    backlog_at_end: int
    unfinished: int

    @property
    def producer_kept_up(self) -> bool:
        return self.achieved_rate >= 0.95 * self.target_rate

    @property
    def worker_kept_up(self) -> bool:
        # What arrives in 100 ms may still be in flight when the producer stops.
        return self.unfinished == 0 and self.backlog_at_end <= max(10, self.achieved_rate * 0.1)

    @property
    def kept_up(self) -> bool:
        return self.producer_kept_up and self.worker_kept_up
