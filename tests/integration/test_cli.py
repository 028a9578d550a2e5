"""The `conveyor` command: real subprocesses against a SQLite file."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import HISTORY_APP, conveyor, free_port, stop, wait_ready

pytestmark = pytest.mark.timeout(120)


def cli(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "conveyor", "--log-level", "warning", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    history = tmp_path / "history"
    history.mkdir()
    return {"CONVEYOR_URL": f"sqlite:///{tmp_path / 'c.db'}", "HISTORY_DIR": str(history)}


def test_enqueue_wait_prints_the_result(env: dict[str, str], tmp_path: Path) -> None:
    worker = conveyor("worker", HISTORY_APP, env=env, log=tmp_path / "worker.log")
    try:
        done = cli(
            "enqueue",
            HISTORY_APP,
            "record",
            "--params",
            '{"n": 41}',
            "--wait",
            "--timeout",
            "30",
            env=env,
        )
    finally:
        assert stop(worker, signal.SIGTERM) == 0
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "41"

    listing = cli("jobs", env=env)
    assert listing.returncode == 0, listing.stderr
    assert "record" in listing.stdout
    assert "completed" in listing.stdout
    queues = cli("queues", env=env)
    assert queues.returncode == 0, queues.stderr
    assert "default" in queues.stdout


def test_enqueue_without_wait_prints_the_id(env: dict[str, str]) -> None:
    done = cli("enqueue", HISTORY_APP, "record", "--params", "[1]", "--delay", "60", env=env)
    assert done.returncode == 0, done.stderr
    assert len(done.stdout.strip()) == 36


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (("run", "nowhere.py:app"), "no such file"),
        (("worker", "not a spec"), "module:attribute"),
        (("enqueue", HISTORY_APP, "nope"), "unknown task type 'nope'"),
        (("enqueue", HISTORY_APP, "record", "--params", "{not json"), "valid JSON"),
        (("enqueue", HISTORY_APP, "record", "--params", '"text"'), "object or array"),
        (("enqueue", HISTORY_APP, "record", "--params", '{"m": 1}'), "missing a required argument"),
        (("enqueue", HISTORY_APP, "record", "--params", '{"n": 1, "m": 1}'), "unexpected keyword"),
        (("enqueue", HISTORY_APP, "record", "--delay", "-1"), "-1"),
        (("jobs", "--url", "ftp://x"), "unsupported store URL"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(
    env: dict[str, str], args: tuple[str, ...], needle: str
) -> None:
    done = cli(*args, env=env)
    assert done.returncode != 0
    assert needle in done.stderr
    assert "Traceback" not in done.stderr


def test_corrupt_database_file_is_a_clear_error(env: dict[str, str], tmp_path: Path) -> None:
    (tmp_path / "c.db").write_bytes(b"this is not a database" * 100)
    done = cli("jobs", env=env)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "c.db" in done.stderr


def test_unwritable_database_location_is_a_clear_error(env: dict[str, str]) -> None:
    env = {**env, "CONVEYOR_URL": "sqlite:////proc/no/such/dir/c.db"}
    done = cli("queues", env=env)
    assert done.returncode != 0
    assert "Traceback" not in done.stderr
    assert "/proc/no/such/dir/c.db" in done.stderr


#: No auth from the environment the tests run in.
OPEN = {"CONVEYOR_API_TOKENS": "", "CONVEYOR_ALLOW_INSECURE_NO_AUTH": ""}


@pytest.mark.parametrize(
    "command",
    [
        ("run", HISTORY_APP, "--host", "0.0.0.0"),
        ("api", HISTORY_APP, "--host", "::"),
        ("demo", "--host", "0.0.0.0"),
    ],
    ids=["run", "api", "demo"],
)
def test_an_open_api_on_a_public_address_refuses_to_start(
    env: dict[str, str], command: tuple[str, ...]
) -> None:
    done = cli(*command, "--port", str(free_port()), env={**env, **OPEN}, timeout=20)
    assert done.returncode == 1
    assert done.stdout == ""
    [line] = done.stderr.splitlines()
    assert "CONVEYOR_API_TOKENS" in line
    assert "--insecure-no-auth" in line
    assert "CONVEYOR_ALLOW_INSECURE_NO_AUTH" in line


@pytest.mark.parametrize(
    ("extra_env", "flags"),
    [
        ({"CONVEYOR_API_TOKENS": "t0ken"}, ()),
        ({}, ("--insecure-no-auth",)),
        ({"CONVEYOR_ALLOW_INSECURE_NO_AUTH": "1"}, ()),
    ],
    ids=["tokens", "flag", "variable"],
)
def test_tokens_or_an_explicit_choice_let_it_start(
    env: dict[str, str], tmp_path: Path, extra_env: dict[str, str], flags: tuple[str, ...]
) -> None:
    port = free_port()
    server = conveyor(
        "api",
        HISTORY_APP,
        "--host",
        "0.0.0.0",
        "--port",
        str(port),
        *flags,
        env={**env, **OPEN, **extra_env},
        log=tmp_path / "api.log",
    )
    try:
        wait_ready(f"http://127.0.0.1:{port}", server)
        rebound = httpx.get(f"http://127.0.0.1:{port}/readyz", headers={"Host": "evil.example"})
        # Without tokens the Host check still stands between a web page and the API.
        assert rebound.status_code == (200 if "CONVEYOR_API_TOKENS" in extra_env else 403)
    finally:
        assert stop(server, signal.SIGTERM) == 0
