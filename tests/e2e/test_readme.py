"""The README's Python example, as written, under ``conveyor run``: every task it declares
runs, whatever its queue, with no ``--queues`` given."""

from __future__ import annotations

import re
import signal
import time
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import conveyor, free_port, stop, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

README = Path(__file__).parents[2] / "README.md"


def readme_app() -> str:
    """The README's first Python block, without the lines that call the tasks (they
    await at top level, which a module cannot)."""
    block = re.search(r"```python\n(.*?)```", README.read_text(), re.S)
    assert block is not None, "README.md has no Python example"
    lines = block.group(1).splitlines()
    calls = re.compile(r"^(jobs? = |await )")
    return "\n".join(line for line in lines if not calls.match(line)) + "\n"


def test_the_readme_example_runs_its_tasks_on_every_queue(tmp_path: Path) -> None:
    source = readme_app()
    assert '@app.task(mode="process", queue="cpu", name="report-generation")' in source
    (tmp_path / "myapp.py").write_text(source)
    port = free_port()
    proc = conveyor(
        "run",
        f"{tmp_path / 'myapp.py'}:app",
        "--url",
        f"sqlite:///{tmp_path / 'readme.db'}",
        "--port",
        str(port),
        env={"CONVEYOR_API_TOKENS": ""},
        log=tmp_path / "run.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        with httpx.Client(base_url=base, timeout=5) as client:
            locations = [
                client.post("/api/v1/jobs", json=body).headers["location"]
                for body in (
                    {"type": "report-generation", "parameters": {"start": "a", "end": "b"}},
                    {"type": "long_job", "parameters": {"n": 3}},
                )
            ]
            queues = {q["name"]: q for q in client.get("/api/v1/queues").json()["items"]}
            assert {"cpu", "default", "emails"} <= set(queues)
            deadline = time.monotonic() + 60
            for location in locations:
                while (job := client.get(location).json())["status"] != "completed":
                    assert job["status"] in {"pending", "running"}, job
                    assert time.monotonic() < deadline, f"{job['type']} still {job['status']}"
                    time.sleep(0.05)
            queues = {q["name"]: q for q in client.get("/api/v1/queues").json()["items"]}
            assert queues["cpu"]["consumers"] == 1
            assert queues["emails"]["consumers"] == 1
    finally:
        stop(proc, signal.SIGTERM)
    log = (tmp_path / "run.log").read_text()
    assert "no live worker consumes" not in log, log
