"""Health probes, the OpenAPI document, and how store failures are answered."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from conveyor import Conveyor
from conveyor.api import create_app
from conveyor.api.routes import health
from conveyor.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    QueueFullError,
)

from .conftest import assert_error, make_conveyor, submit

JOBS = "/api/v1/jobs"


async def test_healthz(client: httpx.AsyncClient) -> None:
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz(client: httpx.AsyncClient) -> None:
    response = await client.get("/readyz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_readyz_store_down(
    client: httpx.AsyncClient, conveyor: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def ping() -> None:
        raise BackendUnavailableError("no store")

    monkeypatch.setattr(await conveyor.backend(), "ping", ping)
    response = await client.get("/readyz")
    assert_error(response, 503, "UNAVAILABLE")
    assert response.headers["retry-after"] == "5"
    assert (await client.get("/healthz")).status_code == 200


async def test_readyz_store_hangs(
    client: httpx.AsyncClient, conveyor: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def ping() -> None:
        await asyncio.sleep(10)

    monkeypatch.setattr(await conveyor.backend(), "ping", ping)
    monkeypatch.setattr(health, "READY_TIMEOUT_SECONDS", 0.05)
    assert_error(await client.get("/readyz"), 503, "UNAVAILABLE")


async def test_readyz_store_cannot_open() -> None:
    app = make_conveyor()
    app.settings = app.settings.replace(url="nosuch://x")
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=create_app(app)), base_url="http://test"
    ) as client:
        assert_error(await client.get("/readyz"), 503, "UNAVAILABLE")
        assert_error(await client.get(JOBS), 503, "UNAVAILABLE")
        assert (await client.get("/healthz")).status_code == 200


STORE_CALLS = [
    ("GET", JOBS, "list_jobs"),
    ("GET", JOBS + "/0190b4c4-0000-7000-8000-000000000000", "get_job"),
    ("DELETE", JOBS + "/0190b4c4-0000-7000-8000-000000000000", "cancel"),
    ("POST", JOBS + "/0190b4c4-0000-7000-8000-000000000000/retry", "retry"),
    ("POST", JOBS, "enqueue"),
]


async def call_with_broken_store(
    client: httpx.AsyncClient,
    conveyor: Conveyor,
    monkeypatch: pytest.MonkeyPatch,
    call: tuple[str, str, str],
    failure: Exception,
) -> httpx.Response:
    """Make ``call`` with its store method raising ``failure``."""
    method, path, backend_method = call

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise failure

    monkeypatch.setattr(await conveyor.backend(), backend_method, broken)
    json = {"type": "add", "parameters": [1, 2]} if path == JOBS and method == "POST" else None
    return await client.request(method, path, json=json)


@pytest.mark.parametrize("call", STORE_CALLS)
async def test_an_unavailable_store_answers_503(
    client: httpx.AsyncClient,
    conveyor: Conveyor,
    monkeypatch: pytest.MonkeyPatch,
    call: tuple[str, str, str],
) -> None:
    failure = BackendUnavailableError("Redis get_job: Connection refused")
    response = await call_with_broken_store(client, conveyor, monkeypatch, call, failure)
    error = assert_error(response, 503, "UNAVAILABLE")
    assert response.headers["retry-after"] == "5"
    assert error["details"] == {"reason": "Redis get_job: Connection refused"}


@pytest.mark.parametrize("call", STORE_CALLS)
@pytest.mark.parametrize(
    "failure",
    [OverflowError("int too large"), RuntimeError("driver bug"), BackendError("WRONGTYPE")],
)
async def test_a_store_bug_answers_500_and_is_logged(
    conveyor: Conveyor,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    call: tuple[str, str, str],
    failure: Exception,
) -> None:
    # Only a store's own unavailability is a 503: anything else is a bug to find, so it
    # is logged with its traceback, not relabelled "retry later".
    transport = httpx.ASGITransport(app=create_app(conveyor), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        response = await call_with_broken_store(client, conveyor, monkeypatch, call, failure)
    error = assert_error(response, 500, "INTERNAL_ERROR")
    assert "retry-after" not in response.headers
    assert str(failure) not in response.text
    assert error["details"] == {}
    logged = [r for r in caplog.records if r.levelname == "ERROR" and r.exc_info]
    assert logged
    assert logged[0].exc_info is not None
    assert logged[0].exc_info[1] is failure


async def test_a_deleted_sqlite_file_answers_503_and_accepts_nothing(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    app = make_conveyor()
    app.settings = app.settings.replace(url=f"sqlite:///{tmp_path / 'api.db'}")
    transport = httpx.ASGITransport(app=create_app(app))
    client = httpx.AsyncClient(transport=transport, base_url="http://test")
    await submit(client, type="add", parameters=[1, 2])
    for name in ("api.db", "api.db-wal", "api.db-shm"):
        (tmp_path / name).unlink(missing_ok=True)
    response = await client.post("/api/v1/jobs", json={"type": "add", "parameters": [3, 4]})
    assert_error(response, 503, "UNAVAILABLE")
    assert any("api.db was deleted" in r.getMessage() for r in caplog.records), caplog.text
    assert (await client.get("/readyz")).status_code == 503
    assert not (tmp_path / "api.db").exists()  # nothing recreated an empty file either
    await client.aclose()
    await app.aclose()


async def test_queue_full_answers_429(
    client: httpx.AsyncClient, conveyor: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def full(*args: Any, **kwargs: Any) -> Any:
        raise QueueFullError("default", retry_after=2.5)

    monkeypatch.setattr(await conveyor.backend(), "enqueue", full)
    response = await client.post(JOBS, json={"type": "add", "parameters": [1, 2]})
    error = assert_error(response, 429, "QUEUE_FULL")
    assert response.headers["retry-after"] == "3"
    assert error["details"]["queue"] == "default"


async def test_configuration_error_answers_503(
    client: httpx.AsyncClient, conveyor: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def bad(*args: Any, **kwargs: Any) -> Any:
        raise ConfigurationError("bad url")

    monkeypatch.setattr(conveyor, "backend", bad)
    assert_error(await client.get(JOBS), 503, "UNAVAILABLE")


async def test_a_bug_answers_500_in_the_error_shape(
    conveyor: Conveyor, monkeypatch: pytest.MonkeyPatch
) -> None:
    from conveyor.api.routes import jobs

    def bug(job: Any) -> Any:
        raise KeyError("oops")

    monkeypatch.setattr(jobs, "render_job", bug)
    transport = httpx.ASGITransport(app=create_app(conveyor), raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        job_id = await submit(client, type="add", parameters=[1, 2])
        response = await client.get(f"{JOBS}/{job_id}")
    assert_error(response, 500, "INTERNAL_ERROR")
    assert "oops" not in response.text


async def test_apps_are_independent() -> None:
    first, second = make_conveyor(), make_conveyor()
    clients = [
        httpx.AsyncClient(transport=httpx.ASGITransport(app=create_app(a)), base_url="http://t")
        for a in (first, second)
    ]
    try:
        job_id = await submit(clients[0], type="add", parameters=[1, 2])
        assert (await clients[0].get(f"{JOBS}/{job_id}")).status_code == 200
        assert_error(await clients[1].get(f"{JOBS}/{job_id}"), 404, "NOT_FOUND")
    finally:
        for c in clients:
            await c.aclose()
        await first.aclose()
        await second.aclose()


# -- OpenAPI ----------------------------------------------------------------------------
async def test_openapi_documents_routes_and_errors(client: httpx.AsyncClient) -> None:
    response = await client.get("/openapi.json")
    assert response.status_code == 200
    spec = response.json()
    assert spec["openapi"].startswith("3.")
    paths = spec["paths"]
    expected = {
        ("/api/v1/jobs", "post"): "202",
        ("/api/v1/jobs", "get"): "200",
        ("/api/v1/jobs/{job_id}", "get"): "200",
        ("/api/v1/jobs/{job_id}", "delete"): "200",
        ("/api/v1/jobs/{job_id}/retry", "post"): "202",
        ("/healthz", "get"): "200",
        ("/readyz", "get"): "200",
    }
    for (path, method), ok in expected.items():
        operation = paths[path][method]
        assert ok in operation["responses"], (path, method)
        ok_schema = operation["responses"][ok]["content"]["application/json"]["schema"]
        assert "$ref" in ok_schema, (path, method)
        if path.startswith("/api"):
            errors = [s for s in operation["responses"] if s.startswith(("4", "5"))]
            assert errors, (path, method)
            for status in errors:
                schema = operation["responses"][status]["content"]["application/json"]["schema"]
                assert schema == {"$ref": "#/components/schemas/ErrorResponse"}, (path, status)
    body = paths["/api/v1/jobs"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert {"type", "parameters", "runAt", "maxRetries", "idempotencyKey"} <= set(
        body["properties"]
    )
    assert body["required"] == ["type"]
    job = spec["components"]["schemas"]["JobOut"]["properties"]
    assert {"jobId", "createdAt", "maxRetries", "callbackUrl"} <= set(job)
    assert "callbackSecret" not in job
    assert "HTTPValidationError" not in spec["components"]["schemas"]


async def test_docs_page(client: httpx.AsyncClient) -> None:
    response = await client.get("/docs")
    assert response.status_code == 200
    assert "openapi.json" in response.text


def test_error_body_survives_unencodable_text() -> None:
    from conveyor.api.errors import error_body, shorten

    body = orjson.loads(error_body("NOT_FOUND", "bad \ud800 path", {"x": "\ud800"}))
    assert body["error"]["code"] == "NOT_FOUND"
    assert body["error"]["details"] == {}
    assert shorten("a\ud800b") == "a?b"


async def test_tasks_and_queues_feed_the_dashboard(client: httpx.AsyncClient) -> None:
    tasks = (await client.get("/api/v1/tasks")).json()["items"]
    names = [t["name"] for t in tasks]
    assert names == sorted(names)
    first = tasks[0]
    assert set(first) >= {"name", "queue", "mode", "retries", "parameters", "example"}
    required = [p["name"] for p in first["parameters"] if p["required"]]
    assert sorted(first["example"]) == sorted(required)
    submitted = await client.post(
        "/api/v1/jobs", json={"type": first["name"], "parameters": first["example"]}
    )
    assert submitted.status_code == 202, submitted.text
    queues = (await client.get("/api/v1/queues")).json()["items"]
    row = next(q for q in queues if q["name"] == first["queue"])
    assert row["pending"] >= 1
    assert row["paused"] is False
