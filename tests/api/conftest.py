"""Fixtures: a Conveyor on the in-memory store with a few tasks, and a client for its API;
the same app on any store for the tests that run on every store."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from conveyor import Conveyor, Settings
from conveyor.api import create_app
from conveyor.backends.base import Backend, Outcome, OutcomeKind
from conveyor.job import Job

MakeClient = Callable[..., Awaitable[httpx.AsyncClient]]


#: The stores the API is tested on where the store matters.
STORES = ("memory", "sqlite", "redis")


def make_store_url(name: str, directory: Path, request: pytest.FixtureRequest) -> str:
    """The URL of a fresh store of kind ``name`` (SQLite: a file in ``directory``; Redis:
    a key prefix named after ``directory`` on the session's server)."""
    if name == "memory":
        return "memory://"
    if name == "sqlite":
        return f"sqlite:///{directory}/api.db"
    server = request.getfixturevalue("redis_server")
    return f"{server.url}?prefix=t-{directory.name}"


#: The names in-process clients send as ``Host`` (httpx's base URLs here, Starlette's
#: and schemathesis's test client); allowed as a deployment would allow its own name.
TEST_HOSTS = ("test", "t", "testserver")


def make_conveyor(url: str = "memory://", **settings: Any) -> Conveyor:
    """An app with tasks of several signatures; never reads the environment."""
    settings = {"allowed_hosts": TEST_HOSTS, **settings}
    app = Conveyor(settings=Settings(url=url, **settings))

    @app.task()
    async def add(a: int, b: int) -> int:
        return a + b

    @app.task(queue="mail", retries=5)
    async def send_email(to: str, subject: str = "hi", *, cc: list[str] | None = None) -> None:
        return None

    @app.task()
    async def anything(x, y=None):  # type: ignore[no-untyped-def]
        return x

    @app.task()
    async def total(*numbers: float) -> float:
        return sum(numbers)

    @app.task()
    async def tagged(a: int, /, **tags: str) -> None:
        return None

    @app.task()
    async def at(when: datetime) -> None:
        return None

    return app


@pytest.fixture
async def conveyor() -> AsyncIterator[Conveyor]:
    app = make_conveyor()
    yield app
    await app.aclose()


@pytest.fixture
async def client(conveyor: Conveyor) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=create_app(conveyor))
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
        yield c


@pytest.fixture
async def make_client() -> AsyncIterator[MakeClient]:
    """Build a client for an app with custom settings."""
    opened: list[tuple[Conveyor, httpx.AsyncClient]] = []

    async def make(**settings: Any) -> httpx.AsyncClient:
        app = make_conveyor(**settings)
        c = httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(app)), base_url="http://test"
        )
        opened.append((app, c))
        return c

    yield make
    for app, c in opened:
        await c.aclose()
        await app.aclose()


def assert_error(response: httpx.Response, status: int, code: str | None = None) -> dict[str, Any]:
    """The response is ``status`` in the error shape; return its ``error``."""
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert set(body) == {"error"}, body
    error: dict[str, Any] = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["message"], str)
    assert error["message"]
    assert isinstance(error["details"], dict)
    if code is not None:
        assert error["code"] == code, error
    return error


async def submit(client: httpx.AsyncClient, **body: Any) -> str:
    """Submit a job; return its id."""
    response = await client.post("/api/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["jobId"]
    return job_id


async def finish(
    backend: Backend, job_id: str, kind: OutcomeKind, *, queue: str = "default", **fields: Any
) -> None:
    """Drive a pending job through one attempt to ``kind`` without a worker."""
    jobs: list[Job] = await backend.fetch([queue], "tester", 1000, 30)
    job = next(j for j in jobs if j.id == job_id)
    others = [
        Outcome(j.id, "tester", j.attempts, OutcomeKind.RELEASED) for j in jobs if j is not job
    ]
    outcome = Outcome(job.id, "tester", job.attempts, kind, **fields)
    assert all(await backend.complete([outcome, *others]))
