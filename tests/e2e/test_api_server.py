"""The HTTP API as deployed: a real `conveyor run` process (uvicorn) on SQLite and on Redis."""

from __future__ import annotations

import signal
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.e2e.harness import HISTORY_APP, conveyor, free_port, stop, wait_ready
from tests.redis_server import RedisServer

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]


@pytest.fixture(params=["sqlite", "redis"])
def server(
    request: pytest.FixtureRequest, tmp_path: Path, redis_server: RedisServer
) -> Iterator[httpx.Client]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'api.db'}"
    else:
        url = f"{redis_server.url}?prefix=api-{uuid.uuid4().hex[:8]}"
    history = tmp_path / "history"
    history.mkdir()
    port = free_port()
    proc = conveyor(
        "run", HISTORY_APP, "--url", url, "--port", str(port), "--no-scheduler",
        env={"HISTORY_DIR": str(history), "CONVEYOR_MAX_BODY_BYTES": "4096"},
        log=tmp_path / "server.log",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, proc)
        with httpx.Client(base_url=base, timeout=10) as client:
            yield client
    finally:
        assert stop(proc, signal.SIGTERM) == 0


def wait_status(client: httpx.Client, job_id: str, wanted: str) -> dict[str, object]:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        body: dict[str, object] = client.get(f"/api/v1/jobs/{job_id}").json()
        if body["status"] == wanted:
            return body
        time.sleep(0.02)
    raise AssertionError(f"job {job_id} never became {wanted}: {body}")


def assert_error(response: httpx.Response, status: int, code: str) -> None:
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code


def test_job_lifecycle_over_http(server: httpx.Client) -> None:
    submitted = server.post("/api/v1/jobs", json={"type": "record", "parameters": {"n": 7}})
    assert submitted.status_code == 202
    job_id = submitted.json()["jobId"]
    assert submitted.headers["location"] == f"/api/v1/jobs/{job_id}"
    done = wait_status(server, job_id, "completed")
    assert done["result"] == 7
    assert done["attempts"] == 1
    assert_error(server.delete(f"/api/v1/jobs/{job_id}"), 409, "CONFLICT")
    listed = server.get("/api/v1/jobs", params={"status": "completed", "limit": 5}).json()
    assert job_id in [item["jobId"] for item in listed["items"]]

    delayed = server.post(
        "/api/v1/jobs", json={"type": "record", "parameters": {"n": 1}, "delay": 60}
    ).json()["jobId"]
    cancelled = server.delete(f"/api/v1/jobs/{delayed}")
    assert cancelled.status_code == 200
    assert cancelled.json()["status"] == "cancelled"
    retried = server.post(f"/api/v1/jobs/{delayed}/retry")
    assert retried.status_code == 202
    assert wait_status(server, delayed, "completed")["result"] == 1  # retried: runs now


def test_idempotency_queues_workers_and_events(server: httpx.Client) -> None:
    body = {"type": "record", "parameters": {"n": 2}}
    first = server.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "once"})
    again = server.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "once"})
    assert first.status_code == 202
    assert again.status_code == 200
    assert again.json()["jobId"] == first.json()["jobId"]
    wait_status(server, first.json()["jobId"], "completed")

    queues = {q["name"]: q for q in server.get("/api/v1/queues").json()["items"]}
    assert queues["default"]["completed"] >= 1
    workers = server.get("/api/v1/workers").json()["items"]
    assert len(workers) == 1
    assert workers[0]["queues"] == ["default"]

    with server.stream("GET", "/api/v1/events/stream") as stream:
        job_id = server.post("/api/v1/jobs", json=body).json()["jobId"]
        seen: list[str] = []
        for line in stream.iter_lines():
            if line.startswith("data: ") and job_id in line:
                seen.append(line)
            if any('"job_completed"' in s for s in seen):
                break
    kinds = [s.split('"type":"')[1].split('"')[0] for s in seen]
    assert kinds == ["job_created", "job_started", "job_completed"]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    [
        (
            "POST",
            "/api/v1/jobs",
            {"content": b"{not json", "headers": {"content-type": "application/json"}},
            422,
            "VALIDATION_ERROR",
        ),
        ("POST", "/api/v1/jobs", {"json": {"type": "nope"}}, 422, "UNKNOWN_TASK"),
        (
            "POST",
            "/api/v1/jobs",
            {"json": {"type": "record", "parameters": {"n": "x"}}},
            422,
            "VALIDATION_ERROR",
        ),
        (
            "POST",
            "/api/v1/jobs",
            {"json": {"type": "record", "parameters": {"n": 1}, "delay": -1}},
            422,
            "VALIDATION_ERROR",
        ),
        (
            "POST",
            "/api/v1/jobs",
            {"json": {"type": "record", "parameters": {"n": "x" * 5000}}},
            413,
            "PAYLOAD_TOO_LARGE",
        ),
        (
            "POST",
            "/api/v1/jobs",
            {"content": b"\xff\xfe", "headers": {"content-type": "application/json"}},
            422,
            "VALIDATION_ERROR",
        ),
        ("GET", "/api/v1/jobs/..%2F..%2Fetc%2Fpasswd", {}, 404, "NOT_FOUND"),
        ("GET", "/api/v1/jobs/" + "a" * 5000, {}, 404, "NOT_FOUND"),
        ("PATCH", "/api/v1/jobs", {}, 405, "METHOD_NOT_ALLOWED"),
        ("GET", "/api/v1/jobs", {"params": {"status": "done"}}, 422, "VALIDATION_ERROR"),
        (
            "POST",
            "/api/v1/schedules",
            {"json": {"type": "record", "cron": "61 * * * *"}},
            422,
            "VALIDATION_ERROR",
        ),
    ],
)
def test_hostile_requests_get_4xx_in_the_error_shape(
    server: httpx.Client,
    method: str,
    path: str,
    kwargs: dict[str, object],
    status: int,
    code: str,
) -> None:
    assert_error(server.request(method, path, **kwargs), status, code)  # type: ignore[arg-type]
    assert server.get("/healthz").status_code == 200
