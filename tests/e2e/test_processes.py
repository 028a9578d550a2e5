"""Conveyor as users run it: real processes, real HTTP, a real SQLite file, real signals."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor.loader import load_app
from tests.e2e.harness import HISTORY_APP, History, conveyor, free_port, stop, wait_ready

FAULTY_APP = f"{Path(__file__).with_name('faulty_store_app.py')}:app"

pytestmark = [pytest.mark.slow, pytest.mark.timeout(180)]


def _env(tmp_path: Path, **extra: str) -> dict[str, str]:
    history = tmp_path / "history"
    history.mkdir(exist_ok=True)
    return {
        "HISTORY_DIR": str(history),
        "CONVEYOR_URL": f"sqlite:///{tmp_path / 'conveyor.db'}",
        "CONVEYOR_LEASE_SECONDS": "1",
        **extra,
    }


def _submit(client: httpx.Client, count: int, sleep_max: float) -> list[str]:
    ids = []
    for n in range(count):
        response = client.post(
            "/api/v1/jobs",
            json={"type": "record", "parameters": {"n": n, "sleep": random.uniform(0, sleep_max)}},
        )
        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"/api/v1/jobs/{response.json()['jobId']}"
        ids.append(response.json()["jobId"])
    return ids


def _wait_all_finished(client: httpx.Client, ids: list[str], timeout: float) -> dict[str, str]:
    deadline = time.monotonic() + timeout
    statuses: dict[str, str] = {}
    while time.monotonic() < deadline:
        pending = [i for i in ids if statuses.get(i) not in {"completed", "failed", "cancelled"}]
        if not pending:
            return statuses
        for job_id in pending:
            statuses[job_id] = client.get(f"/api/v1/jobs/{job_id}").json()["status"]
        time.sleep(0.2)
    return statuses


def wait_for_log(path: Path, text: str, proc: Any, timeout: float = 30) -> None:
    """Wait until the process has written ``text`` to its log."""
    deadline = time.monotonic() + timeout
    while text not in path.read_text():
        assert proc.poll() is None, path.read_text()
        assert time.monotonic() < deadline, f"{text!r} not in {path.name} after {timeout}s"
        time.sleep(0.02)


def test_sigkill_mid_batch_loses_nothing(tmp_path: Path) -> None:
    env = _env(tmp_path)
    history_dir = Path(env["HISTORY_DIR"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ("run", HISTORY_APP, "--port", str(port), "--concurrency", "20")
    first = conveyor(*args, env=env, log=tmp_path / "first.log")
    wait_ready(base, first)
    with httpx.Client(base_url=base, timeout=10) as client:
        ids = _submit(client, 400, sleep_max=0.05)
        # Kill once a good share is done, while the rest is queued or running.
        deadline = time.monotonic() + 60
        while len(History.read(history_dir).finishes) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
    killed_at = time.time()
    stop(first, signal.SIGKILL)
    assert len(History.read(history_dir).finishes) < len(ids), "killed too late to matter"

    second = conveyor(*args, env=env, log=tmp_path / "second.log")
    try:
        wait_ready(base, second)
        with httpx.Client(base_url=base, timeout=10) as client:
            statuses = _wait_all_finished(client, ids, timeout=90)
    finally:
        stop(second, signal.SIGTERM)

    history = History.read(history_dir)
    assert sorted(statuses.values()) == ["completed"] * len(ids)  # none lost, none failed
    assert set(history.finishes) == set(ids)
    in_flight = history.in_flight_at(first.pid, killed_at, ack_window=0.5)
    assert history.duplicates() <= in_flight
    assert all(len(history.starts[i]) == 1 for i in set(ids) - in_flight)


def test_sigterm_drains_running_jobs_and_returns_the_rest(tmp_path: Path) -> None:
    env = _env(tmp_path, CONVEYOR_SHUTDOWN_GRACE_SECONDS="1.5")
    history_dir = Path(env["HISTORY_DIR"])
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    args = ("run", HISTORY_APP, "--port", str(port), "--concurrency", "4")
    proc = conveyor(*args, env=env, log=tmp_path / "run.log")
    wait_ready(base, proc)
    with httpx.Client(base_url=base, timeout=10) as client:
        short = [
            client.post(
                "/api/v1/jobs", json={"type": "record", "parameters": {"n": i, "sleep": 0.5}}
            ).json()["jobId"]
            for i in range(2)
        ]
        long = [
            client.post(
                "/api/v1/jobs", json={"type": "record", "parameters": {"n": 9, "sleep": 30}}
            ).json()["jobId"]
        ]
        deadline = time.monotonic() + 10
        while len(History.read(history_dir).starts) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
    started = time.monotonic()
    assert stop(proc, signal.SIGTERM) == 0
    # Within the grace period and half a second: a supervisor (Kubernetes, systemd) that
    # gives Conveyor's grace gives it no more.
    took = time.monotonic() - started
    assert took < 1.5 + 0.5, took
    history = History.read(history_dir)
    assert set(history.finishes) == set(short)  # drained within the grace period
    assert long[0] in history.starts
    assert long[0] not in history.finishes

    app = load_app(HISTORY_APP)
    app.settings = app.settings.replace(url=env["CONVEYOR_URL"])

    async def states() -> dict[str, tuple[str, int]]:
        try:
            out = {}
            for job_id in short + long:
                info = await app.job(job_id).info()
                out[job_id] = (info.status.value, info.attempts)
            return out
        finally:
            await app.aclose()

    result = asyncio.run(states())
    assert [result[i][0] for i in short] == ["completed", "completed"]
    assert result[long[0]] == ("pending", 0)  # returned to the queue, attempt not spent


@pytest.mark.parametrize("command", ["run", "worker", "api"])
def test_an_idle_process_exits_at_once_on_sigterm(tmp_path: Path, command: str) -> None:
    grace = 2.0
    env = _env(tmp_path, CONVEYOR_SHUTDOWN_GRACE_SECONDS=str(grace))
    port = free_port()
    args: tuple[str, ...] = (command, HISTORY_APP)
    if command != "worker":
        args += ("--port", str(port))
    proc = conveyor(*args, env=env, log=tmp_path / "run.log")
    if command == "worker":
        wait_for_log(tmp_path / "run.log", "consuming", proc)
    else:
        wait_ready(f"http://127.0.0.1:{port}", proc)
    started = time.monotonic()
    assert stop(proc, signal.SIGTERM) == 0, (tmp_path / "run.log").read_text()
    took = time.monotonic() - started
    # Nothing to drain: it does not wait out the grace period, and ends well within
    # grace + 0.5 s (what a supervisor that gives Conveyor's grace allows).
    assert took < grace, took


def test_two_workers_on_one_sqlite_file_run_each_job_once(tmp_path: Path) -> None:
    env = _env(tmp_path, CONVEYOR_LEASE_SECONDS="30")
    history_dir = Path(env["HISTORY_DIR"])
    app = load_app(HISTORY_APP)
    app.settings = app.settings.replace(url=env["CONVEYOR_URL"])
    task = app.get_task("record")

    async def enqueue() -> list[str]:
        try:
            handles = await task.enqueue_many([((n,), {}) for n in range(2000)])
            return [h.id for h in handles]
        finally:
            await app.aclose()

    workers = [
        conveyor(
            "worker", HISTORY_APP, "--concurrency", "50", env=env, log=tmp_path / f"worker{i}.log"
        )
        for i in range(2)
    ]
    try:
        # Both consume before the jobs arrive: a worker that starts late would find the
        # other one done already, and show nothing about sharing one file.
        for i, worker in enumerate(workers):
            wait_for_log(tmp_path / f"worker{i}.log", "consuming", worker)
        ids = asyncio.run(enqueue())
        deadline = time.monotonic() + 120
        while len(History.read(history_dir).finishes) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        codes = [stop(w, signal.SIGTERM) for w in workers]
    history = History.read(history_dir)
    assert codes == [0, 0]
    assert set(history.finishes) == set(ids)
    assert history.duplicates() == set()
    pids = {r["pid"] for runs in history.starts.values() for r in runs}
    assert len(pids) == 2  # both workers took a share


def test_supervised_workers_are_restarted_after_a_kill(tmp_path: Path) -> None:
    env = _env(tmp_path)
    history_dir = Path(env["HISTORY_DIR"])
    app = load_app(HISTORY_APP)
    app.settings = app.settings.replace(url=env["CONVEYOR_URL"])
    task = app.get_task("record")

    async def enqueue() -> list[str]:
        try:
            handles = await task.enqueue_many([((n, 0.05), {}) for n in range(600)])
            return [h.id for h in handles]
        finally:
            await app.aclose()

    ids = asyncio.run(enqueue())
    supervisor = conveyor(
        "worker",
        HISTORY_APP,
        "--processes",
        "2",
        "--concurrency",
        "10",
        env=env,
        log=tmp_path / "supervisor.log",
    )
    try:
        deadline = time.monotonic() + 60
        while len(History.read(history_dir).finishes) < 100 and time.monotonic() < deadline:
            time.sleep(0.02)
        first_run = next(iter(History.read(history_dir).starts.values()))[0]
        victim = int(str(first_run["pid"]))
        os.kill(victim, signal.SIGKILL)
        deadline = time.monotonic() + 90
        while len(History.read(history_dir).finishes) < len(ids) and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        code = stop(supervisor, signal.SIGTERM)
    history = History.read(history_dir)
    assert code == 0
    assert set(history.finishes) == set(ids)
    pids = {r["pid"] for runs in history.starts.values() for r in runs}
    assert victim in pids
    assert len(pids) == 3  # two workers, and the one that replaced the killed worker


def test_a_worker_that_cannot_store_outcomes_exits_nonzero_and_is_replaced(
    tmp_path: Path,
) -> None:
    fault = tmp_path / "fault"
    fault.touch()
    env = _env(tmp_path, FAULT_FILE=str(fault))
    log = tmp_path / "supervisor.log"
    app = load_app(HISTORY_APP)
    app.settings = app.settings.replace(url=env["CONVEYOR_URL"])
    task = app.get_task("record")

    async def enqueue() -> list[str]:
        handles = await task.enqueue_many([((n,), {}) for n in range(20)])
        return [h.id for h in handles]

    async def states(ids: list[str]) -> list[tuple[str, int]]:
        infos = [await app.job(job_id).info() for job_id in ids]
        return [(info.status.value, info.attempts) for info in infos]

    async def scenario() -> tuple[int, list[tuple[str, int]]]:
        try:
            ids = await enqueue()
            supervisor = conveyor(
                "worker", FAULTY_APP, "--processes", "2", "--concurrency", "10", env=env, log=log
            )
            try:
                # A worker meets the bug storing its first outcomes and exits non-zero...
                deadline = time.monotonic() + 60
                while "exited with 1; restarting" not in log.read_text(errors="replace"):
                    assert time.monotonic() < deadline, log.read_text(errors="replace")
                    await asyncio.sleep(0.05)
                fault.unlink()
                # ...and once its leases expire, the jobs it held run again elsewhere.
                deadline = time.monotonic() + 60
                while {s for s, _ in await states(ids)} != {"completed"}:
                    assert time.monotonic() < deadline, await states(ids)
                    await asyncio.sleep(0.1)
                # Every worker started is up (a SIGTERM while one starts would kill it).
                while (text := log.read_text(errors="replace")).count(" consuming ") < text.count(
                    " started (pid "
                ):
                    assert time.monotonic() < deadline, text
                    await asyncio.sleep(0.05)
            finally:
                code = stop(supervisor, signal.SIGTERM)
            return code, await states(ids)
        finally:
            await app.aclose()

    code, final = asyncio.run(scenario())
    text = log.read_text(errors="replace")
    assert code == 0, text[-4000:]
    assert "Traceback" in text
    assert "RuntimeError: bug in the store layer" in text
    assert "stopping: storing outcomes failed" in text
    assert any(attempts >= 2 for _, attempts in final), final  # run again after the crash
