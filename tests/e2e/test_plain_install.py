"""Conveyor as a stranger installs it: the wheel, built from this tree, in a fresh
virtualenv with no extras (then with ``[redis]``), running a job end to end.

Nothing from the test environment leaks in: the processes run the new venv's own
``conveyor`` script from a directory outside the checkout, with no ``PYTHONPATH``.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import free_port, stop, wait_ready
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).parents[2]

APP = """\
import asyncio

from conveyor import Conveyor, current_job

app = Conveyor()


@app.task(mode="thread")
def add(a: int, b: int) -> int:
    return a + b


@app.task()
async def slow_square(n: int) -> int:
    await current_job().set_progress(50)
    await asyncio.sleep(0.05)
    return n * n
"""


@dataclass(frozen=True)
class Venv:
    path: Path
    wheel: Path

    @property
    def conveyor(self) -> Path:
        return self.path / "bin" / "conveyor"

    def pip(self, *args: str) -> None:
        run(str(self.path / "bin" / "python"), "-m", "pip", "--quiet", *args)


def run(*command: str, cwd: Path | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=clean_env())
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"


def clean_env(**extra: str) -> dict[str, str]:
    """The environment of a user's shell: no test settings, no paths into this tree."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("CONVEYOR_", "PYTHON", "VIRTUAL_ENV", "PYTEST"))
    }
    return {**env, **extra}


@pytest.fixture(scope="module")
def venv(tmp_path_factory: pytest.TempPathFactory) -> Venv:
    """A fresh virtualenv with the wheel of this tree installed, no extras."""
    base = tmp_path_factory.mktemp("plain-install")
    dist = base / "dist"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "-w", str(dist), str(ROOT))
    (wheel,) = dist.glob("conveyor-*.whl")
    # The interpreter the tests run on, but none of its packages.
    run(sys.executable, "-m", "venv", str(base / "venv"))
    env = Venv(base / "venv", wheel)
    env.pip("install", str(wheel))
    return env


def start(venv: Venv, cwd: Path, *args: str) -> subprocess.Popen[bytes]:
    log = (cwd / f"{args[0]}.log").open("ab")
    with log:
        return subprocess.Popen(
            [str(venv.conveyor), *args],
            cwd=cwd,
            env=clean_env(),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def logs(cwd: Path) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text()[-3000:]}" for p in sorted(cwd.glob("*.log")))


def submit_and_wait(base: str) -> None:
    """Two jobs over HTTP, one per executor, followed to their results."""
    with httpx.Client(base_url=base, timeout=5) as client:
        expected = {}
        for body, result in (
            ({"type": "add", "parameters": {"a": 2, "b": 3}}, 5),
            ({"type": "slow_square", "parameters": {"n": 7}}, 49),
        ):
            answer = client.post("/api/v1/jobs", json=body)
            assert answer.status_code == 202, answer.text
            assert answer.headers["location"].endswith(answer.json()["jobId"])
            expected[answer.headers["location"]] = result
        deadline = time.monotonic() + 30
        for location, result in expected.items():
            while True:
                job = client.get(location).json()
                if job["status"] == "completed":
                    assert job["result"] == result
                    assert job["attempts"] == 1
                    break
                assert job["status"] in {"pending", "running"}, job
                assert time.monotonic() < deadline, f"{location} still {job['status']}"
                time.sleep(0.05)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    (tmp_path / "myapp.py").write_text(APP)
    return tmp_path


def test_plain_install_runs_a_job_with_conveyor_run_on_sqlite(venv: Venv, workdir: Path) -> None:
    port = free_port()
    proc = start(venv, workdir, "run", "myapp.py:app", "--port", str(port))
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        submit_and_wait(base)
    except BaseException:
        stop(proc)
        raise AssertionError(logs(workdir)) from None
    assert stop(proc, signal.SIGTERM) == 0, logs(workdir)
    # The default store: a SQLite file in the working directory.
    assert (workdir / "conveyor.db").exists()


def test_plain_install_with_the_redis_extra_runs_api_and_worker(
    venv: Venv, workdir: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    # Without the extra, a Redis URL is a one-line error naming it.
    done = subprocess.run(
        [str(venv.conveyor), "queues", "--url", "redis://127.0.0.1:1/0"],
        cwd=workdir,
        env=clean_env(),
        capture_output=True,
        text=True,
    )
    assert done.returncode != 0
    assert "pip install 'conveyor[redis]'" in done.stderr
    assert "Traceback" not in done.stderr

    venv.pip("install", f"{venv.wheel}[redis]")
    server = RedisServer(tmp_path_factory.mktemp("redis")).start()
    try:
        port = free_port()
        base = f"http://127.0.0.1:{port}"
        api = start(venv, workdir, "api", "myapp.py:app", "--url", server.url, "--port", str(port))
        worker = start(venv, workdir, "worker", "myapp.py:app", "--url", server.url)
        try:
            wait_ready(base, api)
            submit_and_wait(base)
            assert worker.poll() is None, "the worker exited"
        except BaseException:
            stop(api)
            stop(worker)
            raise AssertionError(logs(workdir)) from None
        assert stop(api, signal.SIGTERM) == 0, logs(workdir)
        assert stop(worker, signal.SIGTERM) == 0, logs(workdir)
    finally:
        server.stop()
