"""The dashboard as a browser renders it: a real server, real jobs, headless Chromium."""

from __future__ import annotations

import html
import re
import shutil
import signal
import struct
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import conveyor, free_port, stop, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

PAGE = Path(__file__).parents[2] / "src/conveyor/api/dashboard/index.html"


@pytest.fixture
def chromium() -> str:
    path = shutil.which("chromium")
    if path is None:
        pytest.fail(
            "chromium is not installed: the dashboard test needs the Debian package "
            "`chromium` (`make test` installs it when run as root; else apt-get install -y "
            "chromium)"
        )
    return path


@pytest.fixture
def server(tmp_path: Path) -> Iterator[str]:
    port = free_port()
    proc = conveyor(
        "run",
        "conveyor.demo:app",
        "--url",
        f"sqlite:///{tmp_path / 'd.db'}",
        "--port",
        str(port),
        env={"CONVEYOR_API_TOKENS": ""},
        log=tmp_path / "server.log",
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        yield base
    finally:
        stop(proc, signal.SIGTERM)


def browse(chromium: str, tmp_path: Path, url: str, *mode: str) -> bytes:
    """Load ``url`` in headless Chromium for 4 s of virtual time; answer its stdout."""
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            f"--user-data-dir={profile}",
            "--virtual-time-budget=4000",
            "--window-size=1440,1100",
            "--hide-scrollbars",
            *mode,
            url,
        ],
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode(errors="replace")[-2000:]
    return done.stdout


def text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def tbody(dom: str, element_id: str) -> str:
    found = re.search(rf'<tbody id="{element_id}">(.*?)</tbody>', dom, re.S)
    assert found, f"no #{element_id} in the page"
    return found.group(1)


def row(body: str, attribute: str, value: str) -> str:
    found = re.search(rf'<tr[^>]*\b{attribute}="{re.escape(value)}"[^>]*>(.*?)</tr>', body, re.S)
    assert found, f"no row with {attribute}={value!r} in {text(body)!r}"
    return text(found.group(1))


def shows(shown: str, *needles: str) -> None:
    for needle in needles:
        assert needle in shown, f"{needle!r} not in {shown!r}"


def wait_finished(client: httpx.Client, job_id: str) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        job: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}").json()
        if job["status"] in ("completed", "failed", "cancelled"):
            return job
        time.sleep(0.05)
    raise TimeoutError(f"job {job_id} did not finish")


def test_dashboard_renders_jobs_queues_workers_and_schedules(
    server: str, chromium: str, tmp_path: Path
) -> None:
    started = time.monotonic()
    with httpx.Client(base_url=server, timeout=10) as client:
        submitted = client.post(
            "/api/v1/jobs",
            json={"type": "resize_image", "parameters": {"url": "https://example.com/a.png"}},
        )
        assert submitted.status_code == 202, submitted.text
        job_id = submitted.json()["jobId"]
        failing = client.post(
            "/api/v1/jobs", json={"type": "divide", "parameters": {"a": 1, "b": 0}}
        )
        assert failing.status_code == 202, failing.text
        failed_id = failing.json()["jobId"]
        schedule = client.post(
            "/api/v1/schedules",
            json={
                "id": "nightly-mail",
                "type": "send_email",
                "parameters": {"to": "a@b.c"},
                "cron": "0 2 * * *",
            },
        )
        assert schedule.status_code == 201, schedule.text
        stranded = client.post(
            "/api/v1/jobs",
            json={"type": "send_email", "parameters": {"to": "a@b.c"}, "queue": "nobody"},
        )
        assert stranded.status_code == 202, stranded.text
        assert wait_finished(client, job_id)["status"] == "completed"
        assert wait_finished(client, failed_id)["status"] == "failed"
        worker = client.get("/api/v1/workers").json()["items"][0]

    dom = browse(chromium, tmp_path, f"{server}/", "--dump-dom").decode()

    jobs = row(tbody(dom, "jobs"), "data-job", job_id)
    shows(jobs, job_id[:13], "resize_image", "default", "completed", "100%")
    assert "failed" in row(tbody(dom, "jobs"), "data-job", failed_id)
    queue = row(tbody(dom, "queues"), "data-queue", "default")
    assert queue.startswith("default"), queue
    shows(queue, "Pause")
    assert "no worker" not in queue
    # A queue with jobs and no live consumer is flagged.
    shows(row(tbody(dom, "queues"), "data-queue", "nobody"), "nobody no worker", "1")
    workers = row(tbody(dom, "workers"), "data-worker", worker["id"])
    shows(workers, worker["host"], f"pid {worker['pid']}", "default")
    # in flight / concurrency (in flight may have moved since the API answered)
    assert re.search(rf"\b\d+ / {worker['concurrency']}\b", workers), workers
    schedules = row(tbody(dom, "schedules"), "data-schedule", "nightly-mail")
    shows(schedules, "send_email", "0 2 * * *", "in ")
    # The event stream is read with fetch() (EventSource cannot send a bearer token).
    assert re.search(r'id="conn"[^>]*data-conn="live"', dom), "the event stream did not connect"
    assert 'id="store"' not in dom  # the API does not expose the store URL

    # A link to one job opens its detail, with the task's error.
    detail = browse(chromium, tmp_path, f"{server}/#job={failed_id}", "--dump-dom").decode()
    found = re.search(r'<div id="detail">(.*?)<div class="msg" id="detail-msg"', detail, re.S)
    assert found, "no job detail"
    shown = text(found.group(1))
    shows(shown, failed_id, "divide", "TASK_FAILED", "division by zero", "NonRetryableError")

    shot = tmp_path / "dashboard.png"
    browse(chromium, tmp_path, f"{server}/#job={job_id}", f"--screenshot={shot}")
    png = shot.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (1440, 1100)
    assert len(png) > 30_000, f"a {len(png)}-byte screenshot is too plain to show the page"
    print(f"dashboard e2e: {time.monotonic() - started:.1f}s, screenshot {shot}")


def test_page_builds_its_markup_from_text_only() -> None:
    # Values from the API reach the page as text nodes: no innerHTML, no external assets.
    page = PAGE.read_text(encoding="utf-8")
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in page, sink
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page), "the page must work offline"
