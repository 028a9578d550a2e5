"""``CONVEYOR_RESULT_TTL_SECONDS`` in real processes: every process that opens the store
applies it from the first job on, and any long-lived one (an API alone too) purges."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from conveyor import Conveyor, Settings
from tests.e2e.harness import HISTORY_APP, conveyor, free_port, stop, wait_ready

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

TTL = "1"
#: Far less than a minute: older versions purged (and, on Redis, learnt the TTL) only
#: in workers, a minute after they started.
DEADLINE = 15.0


@pytest.fixture(params=["sqlite", "redis"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'conveyor.db'}"
    else:
        server = request.getfixturevalue("redis_server")
        yield f"{server.url}?prefix=ttl-{uuid.uuid4().hex[:10]}"


def _env(tmp_path: Path, url: str) -> dict[str, str]:
    history = tmp_path / "history"
    history.mkdir(exist_ok=True)
    return {"HISTORY_DIR": str(history), "CONVEYOR_URL": url, "CONVEYOR_RESULT_TTL_SECONDS": TTL}


def _gone_within(check: Callable[[], bool], deadline: float) -> float:
    """Seconds until ``check()`` says the record is gone; fails past ``deadline``."""
    started = time.monotonic()
    while time.monotonic() - started < deadline:
        if check():
            return time.monotonic() - started
        time.sleep(0.1)
    pytest.fail(f"the record was still there after {deadline}s")


def test_an_api_alone_deletes_a_job_cancelled_through_it(tmp_path: Path, url: str) -> None:
    port = free_port()
    api = conveyor(
        "api", HISTORY_APP, "--url", url, "--port", str(port),
        env=_env(tmp_path, url), log=tmp_path / "api.log",
    )  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_ready(base, api)
        with httpx.Client(base_url=base, timeout=10) as client:
            submitted = client.post(
                "/api/v1/jobs", json={"type": "record", "parameters": {"n": 1}, "delay": 3600}
            )
            job_id = submitted.json()["jobId"]
            assert client.delete(f"/api/v1/jobs/{job_id}").json()["status"] == "cancelled"
            assert client.get(f"/api/v1/jobs/{job_id}").status_code == 200
            waited = _gone_within(
                lambda: client.get(f"/api/v1/jobs/{job_id}").status_code == 404, DEADLINE
            )
        assert waited >= 0.5  # kept for its retention first (1 s from the cancel)
    finally:
        stop(api)


async def test_a_worker_deletes_a_job_it_completed(tmp_path: Path, url: str) -> None:
    worker = conveyor(
        "worker", HISTORY_APP, "--url", url, "--no-scheduler",
        env=_env(tmp_path, url), log=tmp_path / "worker.log",
    )  # fmt: skip
    # This process only enqueues and looks (it runs no purger).
    app = Conveyor(settings=Settings(url=url, result_ttl_seconds=float(TTL)))

    @app.task(name="record")
    async def record(n: int, sleep: float = 0.0) -> int:
        return n

    try:
        handle = await record.enqueue(7)
        assert await handle.result(timeout=30) == 7
        backend = await app.backend()
        started = time.monotonic()
        while await backend.get_job(handle.id) is not None:
            if time.monotonic() - started > DEADLINE:
                pytest.fail(f"the completed job was still there after {DEADLINE}s")
            await asyncio.sleep(0.1)
    finally:
        stop(worker)
        await app.aclose()
