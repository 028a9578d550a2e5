"""Proof that a benchmark's jobs each ran, and completed, exactly once.

A rate is only worth printing if every job it counts completed, once. Bench tasks call
:meth:`RunLog.record`, which counts runs by queue and job id in the process that runs
them; a worker process writes its tally to ``$CONVEYOR_BENCH_RUNS/<pid>.json`` when it
exits. After the timing, :func:`verify` holds the ids the bench enqueued against the
store's records and the tallies.
"""

from __future__ import annotations

import atexit
import json
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from pathlib import Path

from conveyor.context import current_job
from conveyor.job import Job, JobStatus

#: Where worker processes write their tallies (set by the bench for its workers).
RUNS_DIR_ENV = "CONVEYOR_BENCH_RUNS"
#: Tests only: every Nth run of a bench task in a process raises, so the check must fail.
FAIL_EVERY_ENV = "CONVEYOR_BENCH_FAIL_EVERY"
#: Ids shown per kind of problem.
EXAMPLES = 3


class RunLog:
    """Runs of bench tasks in this process, by queue and job id."""

    def __init__(self) -> None:
        self.by_queue: defaultdict[str, Counter[str]] = defaultdict(Counter)
        self._fail_every: int | None = None  # read at the first run, not at import

    def record(self) -> None:
        """Count one run of the current job (call it from the task).

        Raises:
            RuntimeError: the run that ``CONVEYOR_BENCH_FAIL_EVERY`` asks to fail.
        """
        job = current_job().job
        if self._fail_every is None:
            self._start()
        runs = self.by_queue[job.queue]
        runs[job.id] += 1
        if self._fail_every and len(runs) % self._fail_every == 0:
            raise RuntimeError(f"failure injected by {FAIL_EVERY_ENV}")

    def _start(self) -> None:
        self._fail_every = int(os.environ.get(FAIL_EVERY_ENV) or 0)
        directory = os.environ.get(RUNS_DIR_ENV)
        if directory:
            atexit.register(self.dump, Path(directory))

    def dump(self, directory: Path) -> None:
        """Write the tally to ``directory/<pid>.json``."""
        path = directory / f"{os.getpid()}.json"
        path.write_text(json.dumps({q: dict(c) for q, c in self.by_queue.items()}))


def read_runs(directory: Path, queue: str) -> Counter[str]:
    """The runs of ``queue``'s jobs, summed over the tallies of every worker process."""
    total: Counter[str] = Counter()
    for path in sorted(directory.glob("*.json")):
        total.update(json.loads(path.read_text()).get(queue, {}))
    return total


def verify(
    expected: Collection[str],
    records: Sequence[Job],
    runs: Mapping[str, int],
    *,
    not_due: Collection[str] = (),
) -> list[str]:
    """What is wrong with a scenario's jobs; nothing when each ran and completed once.

    Args:
        expected: ids of the jobs that had to run.
        records: the store's records of the scenario's queue.
        runs: runs per job id, as the tasks counted them.
        not_due: ids of jobs in the queue that must not have run yet (delayed far ahead).
    """
    by_id = {job.id: job for job in records}
    problems: list[str] = []

    def report(what: str, found: Iterable[str]) -> None:
        found = sorted(found)
        if found:
            examples = ", ".join(found[:EXAMPLES])
            problems.append(f"{len(found)} {what} (e.g. {examples})")

    report("jobs have no record", (i for i in expected if i not in by_id))
    record_checks: list[tuple[str, Callable[[Job], bool]]] = [
        ("jobs failed", lambda j: j.status is JobStatus.FAILED),
        ("jobs were cancelled", lambda j: j.status is JobStatus.CANCELLED),
        ("jobs did not finish", lambda j: not j.status.finished),
        ("jobs took more than one attempt", lambda j: j.attempts > 1),
        (
            "jobs completed without a recorded run",
            lambda j: j.status is JobStatus.COMPLETED and not runs.get(j.id),
        ),
    ]
    for what, test in record_checks:
        report(what, (i for i in expected if i in by_id and test(by_id[i])))
    failed = [by_id[i] for i in expected if i in by_id and by_id[i].status is JobStatus.FAILED]
    if failed and failed[0].error:
        problems.append(f"the first failure says: {failed[0].error.get('message')}")
    report("jobs ran more than once", (i for i in expected if runs.get(i, 0) > 1))
    report("delayed jobs ran early", (i for i in not_due if runs.get(i) or _started(by_id, i)))
    known = set(expected) | set(not_due)
    report("records were never enqueued", (i for i in by_id if i not in known))
    report("runs are of jobs never enqueued", (i for i in runs if i not in known))
    return problems


def _started(by_id: Mapping[str, Job], job_id: str) -> bool:
    job = by_id.get(job_id)
    return job is not None and (job.status is not JobStatus.PENDING or job.attempts > 0)
