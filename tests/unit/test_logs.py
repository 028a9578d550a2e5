"""Log records as JSON lines, with the job they are about."""

from __future__ import annotations

import io
import json
import logging
import re
import subprocess
import sys
from collections.abc import Callable, Iterator

import pytest

from conveyor import Conveyor
from conveyor.job import Job
from conveyor.observability.logs import JSONFormatter, configure_logging, job_fields
from conveyor.worker import Worker
from tests.conftest import running

log = logging.getLogger("tests.app")


@pytest.fixture
def lines() -> Iterator[Callable[[], list[dict[str, object]]]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JSONFormatter())
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield lambda: [json.loads(line) for line in stream.getvalue().splitlines()]
    finally:
        root.removeHandler(handler)


def test_a_record_is_one_json_object_with_time_level_logger_and_message(
    lines: Callable[[], list[dict[str, object]]],
) -> None:
    log.warning("disk %s at %d%%", "sda", 91, extra={"queue": "emails"})
    try:
        1 / 0  # noqa: B018
    except ZeroDivisionError:
        log.exception("boom\nsecond line")
    first, second = lines()
    assert set(first) == {"time", "level", "logger", "message", "queue"}
    assert first["message"] == "disk sda at 91%"
    assert (first["level"], first["logger"], first["queue"]) == ("WARNING", "tests.app", "emails")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", str(first["time"]))
    assert second["message"] == "boom\nsecond line"
    assert "ZeroDivisionError" in str(second["exception"])


async def test_records_made_while_a_task_runs_carry_its_job(
    make_app: Callable[..., Conveyor], lines: Callable[[], list[dict[str, object]]]
) -> None:
    app = make_app()

    @app.task(queue="mail")
    async def greet(name: str) -> None:
        log.info("hello %s", name)

    @app.task(mode="thread")
    def greet_in_a_thread(name: str) -> None:
        log.info("hi %s", name)

    logging.getLogger("tests.app").setLevel(logging.INFO)
    worker = Worker(app, queues=["mail", "default"])
    async with running(worker):
        first = await greet.enqueue("ada")
        second = await greet_in_a_thread.enqueue("bob")
        await first.result(timeout=10)
        await second.result(timeout=10)
    mine = {str(r["message"]): r for r in lines() if r["logger"] == "tests.app"}
    assert mine["hello ada"] | {"time": None} == {
        "time": None,
        "level": "INFO",
        "logger": "tests.app",
        "message": "hello ada",
        "jobId": first.id,
        "task": "greet",
        "queue": "mail",
        "attempt": 1,
        "workerId": worker.id,
    }
    assert mine["hi bob"]["jobId"] == second.id
    assert mine["hi bob"]["task"] == "greet_in_a_thread"
    await app.aclose()


def test_job_fields_name_a_job_outside_its_task() -> None:
    job = Job(id="j1", type="t", queue="q", attempts=2, lease_owner="w1")
    assert job_fields(job) == {
        "jobId": "j1",
        "task": "t",
        "queue": "q",
        "attempt": 2,
        "workerId": "w1",
    }


def test_configure_logging_switches_format() -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        configure_logging("warning", "json")
        assert isinstance(root.handlers[-1].formatter, JSONFormatter)
        assert root.level == logging.WARNING
        configure_logging("debug", "text")
        assert not isinstance(root.handlers[-1].formatter, JSONFormatter)
        assert len(root.handlers) == 1
    finally:
        root.handlers[:], level = saved
        root.setLevel(level)


def test_the_command_line_writes_json_lines_when_asked() -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "conveyor",
            "--log-format",
            "json",
            "queues",
            "--url",
            "redis://127.0.0.1:1/0",
        ],
        capture_output=True,
        text=True,
        env={"CONVEYOR_LOG_LEVEL": "debug", "PATH": "/usr/bin:/bin"},
        timeout=60,
    )
    assert done.returncode != 0
    records = [json.loads(line) for line in done.stderr.splitlines() if line.startswith("{")]
    assert records, done.stderr
    assert all({"time", "level", "logger", "message"} <= set(r) for r in records)
