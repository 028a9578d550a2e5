"""Store faults: Redis killed and restarted from its AOF, and Redis frozen (SIGSTOP).

The API, worker and producer processes are real; so is the outage. The producer submits
over HTTP and counts as acknowledged only what got a 202; the checker then demands each
of those jobs finished, and blames every duplicate on the fault.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from dataclasses import dataclass, field, replace

import httpx
import pytest

from tests.chaos.helpers import LEASE, Cluster, wait_until
from tests.e2e.harness import (
    HISTORY_APP,
    Fault,
    History,
    check,
    free_port,
    stop,
    wait_ready,
)

pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]

#: Seconds Redis stays down (killed) and frozen (SIGSTOP); longer runs: set the variables.
OUTAGE = float(os.environ.get("CHAOS_REDIS_OUTAGE", 1.25 * LEASE))
FREEZE = float(os.environ.get("CHAOS_REDIS_FREEZE", 2.5 * LEASE))


@dataclass(frozen=True)
class Call:
    """One HTTP call the load made and what it got (status 0: no answer at all)."""

    what: str
    t: float
    status: int
    n: int | None = None
    job_id: str | None = None
    code: str | None = None
    retry_after: str | None = None


@dataclass
class Load:
    """Submits ``record`` jobs and reads jobs back over HTTP from two threads."""

    base: str
    calls: list[Call] = field(default_factory=list)
    stopping: threading.Event = field(default_factory=threading.Event)
    threads: list[threading.Thread] = field(default_factory=list)

    def start(self) -> None:
        for target in (self._submit, self._read):
            thread = threading.Thread(target=target, daemon=True)
            thread.start()
            self.threads.append(thread)

    def stop(self) -> None:
        self.stopping.set()
        for thread in self.threads:
            thread.join(60)
            assert not thread.is_alive()

    def accepted(self, since: float = 0.0) -> list[Call]:
        return [c for c in list(self.calls) if c.status == 202 and c.t >= since]

    def count(self, status: int, since: float) -> Counter[str]:
        return Counter(c.what for c in list(self.calls) if c.status == status and c.t >= since)

    def _call(self, client: httpx.Client, what: str, method: str, url: str, **kw: object) -> Call:
        started = time.time()
        try:
            response = client.request(method, url, **kw)  # type: ignore[arg-type]
        except httpx.TransportError:
            return Call(what, started, 0)
        code = None
        if response.status_code >= 400:
            code = response.json().get("error", {}).get("code")
        return Call(
            what,
            started,
            response.status_code,
            job_id=response.json().get("jobId") if response.status_code == 202 else None,
            code=code,
            retry_after=response.headers.get("retry-after"),
        )

    def _submit(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            n = 0
            while not self.stopping.is_set():
                n += 1
                body = {"type": "record", "parameters": {"n": n, "sleep": random.uniform(0, 0.05)}}
                call = self._call(client, "submit", "POST", "/api/v1/jobs", json=body)
                self.calls.append(replace(call, n=n))

    def _read(self) -> None:
        with httpx.Client(base_url=self.base, timeout=30) as client:
            while not self.stopping.is_set():
                accepted = self.accepted()
                if accepted:
                    self.calls.append(
                        self._call(client, "get", "GET", f"/api/v1/jobs/{accepted[-1].job_id}")
                    )
                self.calls.append(self._call(client, "list", "GET", "/api/v1/jobs?limit=5"))
                self.calls.append(self._call(client, "ready", "GET", "/readyz"))
                time.sleep(0.02)


def history_at_risk(history: History, fault: Fault) -> set[str]:
    """Jobs leased before the fault ended with no outcome stored before it began: no
    finish record 0.25 s (a generous group-commit delay) before it."""
    return check(history, set(), faults=[fault], ack_window=0.25).in_flight[fault]


def test_redis_sigkill_and_restart_loses_no_acknowledged_job(cluster: Cluster) -> None:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    api = cluster.start("api", "api", HISTORY_APP, "--port", str(port))
    wait_ready(base, api)
    workers = [cluster.worker(f"worker{i}", concurrency=10) for i in range(2)]
    info = cluster.redis.cli("info", "persistence")
    assert "aof_enabled:1" in info
    load = Load(base)
    load.start()
    try:
        wait_until(lambda: len(load.accepted()) >= 500, 60, "500 acknowledged submits")
        assert "aof_delayed_fsync:0" in cluster.redis.cli("info", "persistence")
        killed_at = time.time()
        cluster.redis.kill()
        wait_until(
            lambda: min(load.count(503, killed_at)[w] for w in ("submit", "get", "ready")) >= 3,
            30,
            "the API to answer 503 to submits, reads and readiness",
        )
        # The planned outage (longer than a lease: leases run out while the store is away).
        time.sleep(max(0.0, killed_at + OUTAGE - time.time()))
        cluster.redis.start()
        back_at = time.time()
        wait_until(lambda: len(load.accepted(back_at)) >= 300, 60, "300 submits acknowledged after")
    finally:
        load.stop()
    acknowledged = {c.job_id for c in load.accepted() if c.job_id}
    cluster.wait_finished(acknowledged, timeout=120)
    statuses = Counter((c.what, c.status) for c in load.calls)
    alive = [p.poll() is None for p in (api, *workers)]
    for proc in workers:
        cluster.stop_cleanly(proc)
    cluster.stop_cleanly(api)

    history = cluster.poll()
    fault = Fault("redis-kill", killed_at, back_at)
    invoked = {c.n for c in load.calls if c.what == "submit" and c.n is not None}
    verdict = check(history, acknowledged, invoked=invoked, faults=[fault])
    # Running at the kill, or finished during the outage: no outcome stored before it.
    at_risk = history_at_risk(history, fault)
    unavailable = [c for c in load.calls if c.status == 503]
    window = (
        min(c.t for c in unavailable) - killed_at,
        max(c.t for c in unavailable) - back_at,
    )
    print(
        f"\n[G3] Redis down {back_at - killed_at:.2f}s; calls {dict(statuses)}; 503s from "
        f"{window[0]:+.2f}s after the kill to {window[1]:+.2f}s after the restart; "
        f"{len(at_risk)} jobs without a stored outcome at the kill; {verdict.summary()}"
    )
    assert alive == [True, True, True]  # nothing crashed or exited
    # Never a 500, never no answer: 2xx, or 503 UNAVAILABLE with Retry-After.
    assert {s for (what, s) in statuses if what == "submit"} <= {202, 503}
    assert {s for (what, s) in statuses if what != "submit"} <= {200, 503}
    assert all(c.code == "UNAVAILABLE" and c.retry_after for c in unavailable)
    assert verdict.lost == set()
    assert verdict.unexpected == set()
    assert verdict.unjustified == set()
    assert verdict.duplicates <= at_risk
    assert fault in verdict.resume, "nothing started after the restart"
    assert verdict.resume[fault] <= 5.0
    state = cluster.store_state()
    assert (state.stream_entries, state.pel, state.leases, state.pending) == (0, 0, 0, 0)
    assert state.completed == len(set(history.finishes))


def test_redis_frozen_for_two_leases_loses_nothing(cluster: Cluster) -> None:
    total = 6000
    ids = cluster.enqueue([(n, random.uniform(0.02, 0.1)) for n in range(total)])
    workers = [cluster.worker(f"worker{i}", concurrency=20) for i in range(2)]
    wait_until(lambda: len(cluster.poll().finishes) >= 1000, 60, "1000 jobs done")
    paused_at = time.time()
    cluster.redis.pause()
    try:
        time.sleep(FREEZE)  # the planned freeze
    finally:
        cluster.redis.resume()
    resumed_at = time.time()
    done_at_pause = sum(
        1 for runs in cluster.poll().finishes.values() if float(str(runs[0]["t"])) < paused_at
    )
    assert done_at_pause < total, "the freeze came too late to matter"
    cluster.wait_finished(ids, timeout=120)
    for proc in workers:
        cluster.stop_cleanly(proc)

    history = cluster.poll()
    fault = Fault("redis-stop", paused_at, resumed_at)
    verdict = check(history, set(ids), faults=[fault])
    at_risk = history_at_risk(history, fault)
    print(
        f"\n[G4] Redis frozen {resumed_at - paused_at:.2f}s; {len(at_risk)} jobs without a "
        f"stored outcome at the freeze; {verdict.summary()}"
    )
    assert verdict.lost == set()
    assert verdict.unexpected == set()
    assert verdict.unjustified == set()
    assert verdict.duplicates <= at_risk  # so no more than were in flight at the freeze
    assert verdict.resume[fault] <= 3.0
    state = cluster.store_state()
    assert (state.stream_entries, state.pel, state.leases, state.pending) == (0, 0, 0, 0)
    assert state.completed == total


def test_without_aof_a_restart_loses_acknowledged_jobs_and_conveyor_warns(
    cluster: Cluster,
) -> None:
    # The control experiment: the same check must see the loss when Redis may lose it.
    redis = cluster.redis
    redis.stop()
    redis.args += ["--appendonly", "no"]
    redis.start()
    assert "aof_enabled:0" in redis.cli("info", "persistence")
    ids = cluster.enqueue([(n, 0.0) for n in range(100)])
    worker = cluster.worker("worker", concurrency=10)
    cluster.wait_finished(ids[:1], timeout=30)  # the store works...
    assert stop(worker, signal.SIGKILL) == -signal.SIGKILL
    more = cluster.enqueue([(n, 0.0) for n in range(100, 200)])
    redis.kill()
    redis.start()
    assert cluster.store_state().pending == 0  # ...and forgot everything it acknowledged
    verdict = check(cluster.poll(), {*ids, *more})
    print(f"\n[G3 control] appendonly no: {verdict.summary()}")
    assert verdict.lost >= set(more)
    assert verdict.unexpected == set()
    assert "appendonly=no: acknowledged jobs are lost if it restarts" in cluster.log("worker")
