"""Worker faults on Redis: SIGKILL under load, a frozen worker (SIGSTOP), and SIGTERM
(also with Redis frozen).

Every test runs real ``conveyor worker`` processes against a ``redis-server`` of its own
(lease 2 s, AOF everysec) and judges them from the per-process job history
(``tests/e2e/harness.py``: lost, unexpected, justified duplicates, recovery latency)
and from the store's own bookkeeping.
"""

from __future__ import annotations

import os
import random
import signal
import time

import pytest

from conveyor.backends.redis._codec import last_lease
from conveyor.worker.worker import SHUTDOWN_SLACK
from tests.chaos.helpers import GRACE, LEASE, RECOVERY_BOUND, Cluster, wait_until
from tests.e2e.harness import Fault, check

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


def test_sigkill_of_one_of_three_workers_loses_nothing(cluster: Cluster) -> None:
    total = 20_000
    ids = cluster.enqueue([(n, random.uniform(0, 0.02)) for n in range(total)])
    supervisor = cluster.worker("workers", concurrency=50, processes=3)
    # Kill once all three run jobs and a good share is done.
    wait_until(
        lambda: len(cluster.poll().finishes) >= total // 4 and len(cluster.history.pids()) == 3,
        timeout=120,
        what="a quarter of the jobs done by three workers",
    )
    victim = random.choice(sorted(cluster.history.pids()))
    killed_at = time.time()
    os.kill(victim, signal.SIGKILL)
    done_at_kill = len(cluster.history.finishes)
    cluster.wait_finished(ids, timeout=150)
    drained_at = time.time()
    cluster.stop_cleanly(supervisor)

    history = cluster.poll()
    fault = Fault("kill", killed_at, killed_at, victim)
    verdict = check(history, set(ids), faults=[fault], ack_window=0.5)
    unfinished = history.in_flight_at(victim, killed_at, ack_window=0.0)
    # How long before the kill the victim finished a job whose outcome it never stored.
    unacked = [
        killed_at - float(str(f["t"]))
        for job_id in verdict.duplicates
        for f in history.finishes[job_id]
        if f["pid"] == victim
    ]
    times = [float(str(r["t"])) for runs in history.finishes.values() for r in runs]
    rate = total / (max(times) - min(times))
    print(
        f"\n[G1] {total} jobs at {rate:,.0f} jobs/s, 3 workers x 50, SIGKILL pid {victim} "
        f"after {done_at_kill} done "
        f"({len(unfinished)} running); drained {drained_at - killed_at:.1f}s after the kill; "
        f"finished-but-unstored at the kill: {len(unacked)} "
        f"(oldest {max(unacked, default=0.0) * 1000:.0f} ms); {verdict.summary()}"
    )
    assert verdict.lost == set()
    assert verdict.unexpected == set()
    assert verdict.unjustified == set(), "a job ran twice without a fault to blame"
    # The kill orphaned running jobs, and each started again elsewhere in time.
    assert verdict.in_flight[fault], "the kill hit no running job"
    assert verdict.recovery, "no orphaned job was re-started"
    assert max(verdict.recovery.values()) <= RECOVERY_BOUND, verdict.recovery
    assert f"(pid {victim}) exited with -9; restarting" in cluster.log("workers")

    state = cluster.store_state()
    assert (state.stream_entries, state.pel, state.leases) == (0, 0, 0), state
    assert (state.pending, state.delayed, state.failed) == (0, 0, 0), state
    assert state.completed == total
    for job_id in verdict.duplicates:
        record = cluster.job(job_id)
        assert record["s"] == "completed"
        assert last_lease(record["l"])[0] == len(history.starts[job_id])  # one per start


def test_a_frozen_worker_is_replaced_and_its_late_completion_is_fenced(cluster: Cluster) -> None:
    first = cluster.worker("first", concurrency=4)
    second = cluster.worker("second", concurrency=4)
    names = {first.pid: "first", second.pid: "second"}
    runtime = 2 * LEASE  # outlives the lease, ends while its first worker is frozen
    [job_id] = cluster.enqueue([(7, runtime)])
    wait_until(lambda: job_id in cluster.poll().starts, 30, "the job to start")
    [run] = cluster.history.starts[job_id]
    frozen = int(str(run["pid"]))
    other = second.pid if frozen == first.pid else first.pid
    time.sleep(0.3)  # mid-job
    stopped_at = time.time()
    os.kill(frozen, signal.SIGSTOP)
    try:
        wait_until(
            lambda: len(cluster.poll().starts[job_id]) == 2, 3 * LEASE, "the job to start again"
        )
        restart = max(cluster.history.starts[job_id], key=lambda r: float(str(r["t"])))
        # A GC or VM pause of three leases (planned duration, not a wait for a condition).
        time.sleep(max(0.0, stopped_at + 3 * LEASE - time.time()))
    finally:
        os.kill(frozen, signal.SIGCONT)
    thawed_at = time.time()
    refused = f"outcome of job {job_id} attempt 1 refused: lease lost"
    cluster.wait_log(names[frozen], refused, timeout=30)
    wait_until(lambda: cluster.job(job_id).get("s") == "completed", 30, "the job to complete")
    for proc in (first, second):
        cluster.stop_cleanly(proc)

    history = cluster.poll()
    latency = float(str(restart["t"])) - stopped_at
    print(
        f"\n[G5] worker {frozen} frozen {thawed_at - stopped_at:.1f}s mid-job: the job started "
        f"again on {other} after {latency:.3f}s; the late completion was refused"
    )
    assert restart["pid"] == other
    assert (restart["attempt"], run["attempt"]) == (2, 1)
    assert latency <= RECOVERY_BOUND
    # Both attempts ran to their end; only the second one's outcome was stored.
    finishes = sorted((f["pid"], f["attempt"]) for f in history.finishes[job_id])
    assert finishes == sorted([(frozen, 1), (other, 2)])
    record = cluster.job(job_id)
    attempts, _, token = last_lease(record["l"])
    assert (record["s"], attempts) == ("completed", 2)
    assert f"-{other}-" in token  # the last lease, whose outcome was stored
    assert cluster.events(job_id).count("job_completed") == 1
    assert "stale_acks=1" in cluster.log(names[frozen])
    assert "stale_acks=0" in cluster.log(names[other])


def test_sigterm_finishes_short_jobs_and_hands_the_long_one_over(cluster: Cluster) -> None:
    first = cluster.worker("first", concurrency=10)
    long_run = 3 * GRACE  # still running when the grace period ends, even on a slow box
    [long_id] = cluster.enqueue([(0, long_run)])
    short_ids = cluster.enqueue([(n, random.uniform(0.2, 1.0)) for n in range(1, 41)])
    wait_until(
        lambda: long_id in cluster.poll().starts and len(cluster.history.starts) >= 10,
        30,
        "the first worker to be busy with the long job and nine short ones",
    )
    second = cluster.worker("second", concurrency=10)
    term_at = time.time()
    os.kill(first.pid, signal.SIGTERM)
    code = first.wait(GRACE + 10)
    exited_after = time.time() - term_at
    cluster.wait_finished([long_id, *short_ids], timeout=60)
    cluster.stop_cleanly(second)

    history = cluster.poll()
    fault = Fault("term", term_at, term_at + GRACE, first.pid)
    verdict = check(history, {long_id, *short_ids}, faults=[fault])
    print(f"\n[G2] first worker exited {exited_after:.2f}s after SIGTERM; {verdict.summary()}")
    assert code == 0
    assert GRACE - 0.5 <= exited_after <= GRACE + 5  # waited out the grace, then left
    assert verdict.lost == set()
    assert verdict.unexpected == set()
    assert verdict.duplicates == {long_id}  # short jobs: no duplicates
    runs = sorted(history.starts[long_id], key=lambda r: float(str(r["t"])))
    assert [r["pid"] for r in runs] == [first.pid, second.pid]  # re-run exactly once more
    assert [f["pid"] for f in history.finishes[long_id]] == [second.pid]
    record = cluster.job(long_id)
    # The released attempt was given back, not spent.
    assert (record["s"], last_lease(record["l"])[0]) == ("completed", 1)
    assert "job_released" in cluster.events(long_id)
    state = cluster.store_state()
    assert (state.stream_entries, state.pel, state.leases, state.pending) == (0, 0, 0, 0)
    assert state.completed == 1 + len(short_ids)


def test_sigterm_with_redis_frozen_ends_within_the_grace_period_and_slack(
    cluster: Cluster,
) -> None:
    first = cluster.worker("first", concurrency=4)
    [job_id] = cluster.enqueue([(0, 0.5)])
    wait_until(lambda: job_id in cluster.poll().starts, 30, "the job to start")
    cluster.redis.pause()
    try:
        # It finishes while Redis is frozen: its outcome cannot be stored.
        wait_until(lambda: job_id in cluster.poll().finishes, 10, "the job to finish")
        term_at = time.monotonic()
        os.kill(first.pid, signal.SIGTERM)
        code = first.wait(GRACE + SHUTDOWN_SLACK + 30)
        exited_after = time.monotonic() - term_at
    finally:
        cluster.redis.resume()
    print(f"\n[G2b] worker exited {exited_after:.2f}s after SIGTERM with Redis frozen")
    log = cluster.log("first")
    assert code == 0, log[-4000:]
    # 3 s: the runtime's margins (runtime.EXIT_MARGIN, CLOSE_SECONDS) and the exit itself.
    assert exited_after <= GRACE + SHUTDOWN_SLACK + 3
    assert "1 outcomes could not be stored before shutdown" in log
    # The abandoned outcome's job runs again once its lease expires, unless the write
    # still sat in the frozen server's socket and landed when it woke: then the job
    # completed without running again. Never anything else.
    second = cluster.worker("second", concurrency=4)
    wait_until(lambda: cluster.job(job_id).get("s") == "completed", 30, "the job to complete")
    cluster.stop_cleanly(second)
    starts = [r["pid"] for r in cluster.poll().starts[job_id]]
    assert starts in ([first.pid], [first.pid, second.pid]), starts
