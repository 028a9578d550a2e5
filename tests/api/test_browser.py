"""Web pages cannot drive the API through a browser: JSON bodies, Origin and Host checks.

Clients here send what a browser sends for a page on another site (``Origin``, a
``text/plain`` or untyped body, a rebound ``Host``), against apps with the product's
defaults (no ``allowed_hosts`` for the in-process test names).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus

from conveyor import Conveyor, Settings
from conveyor.api import create_app
from conveyor.api.browser import SameOriginMiddleware, host_allowed, same_origin, split_authority
from conveyor.backends.base import JobFilter
from conveyor.job import JobStatus

from . import test_events
from .conftest import assert_error, make_conveyor
from .test_events import Live
from .test_middleware import Recorder

JOBS = "/api/v1/jobs"
ADD = {"type": "add", "parameters": [1, 2]}
EVIL = "https://evil.example"
#: The host and origin a browser shows the dashboard at (README, ``make demo``).
LOCAL = "localhost:8000"
#: A real server on a loopback port, with the product's defaults.
memory_live = test_events.memory_live
SCHEDULE = {"id": "nightly", "type": "add", "parameters": [1, 2], "interval": 60}


@contextlib.asynccontextmanager
async def opened(**settings: Any) -> AsyncIterator[tuple[Conveyor, httpx.AsyncClient]]:
    """An app with the product's Host defaults (plus ``settings``) and its client, which
    reaches it as ``http://localhost:8000``."""
    app = make_conveyor(**{"allowed_hosts": (), **settings})
    transport = httpx.ASGITransport(app=create_app(app))
    try:
        async with httpx.AsyncClient(transport=transport, base_url=f"http://{LOCAL}") as c:
            yield app, c
    finally:
        await app.aclose()


@pytest.fixture
async def api() -> AsyncIterator[tuple[Conveyor, httpx.AsyncClient]]:
    async with opened() as pair:
        yield pair


async def job_ids(app: Conveyor) -> list[str]:
    backend = await app.backend()
    page = await backend.list_jobs(JobFilter(), limit=100)
    return [job.id for job in page.items]


async def paused_queues(client: httpx.AsyncClient) -> list[str]:
    items = (await client.get("/api/v1/queues")).json()["items"]
    return [q["name"] for q in items if q["paused"]]


async def submitted(client: httpx.AsyncClient) -> str:
    response = await client.post(JOBS, json=ADD)
    assert response.status_code == 202, response.text
    job_id: str = response.json()["jobId"]
    return job_id


# -- JSON bodies --------------------------------------------------------------------------
@pytest.mark.parametrize(
    "headers",
    [
        {},  # fetch(url, {method: "POST", body: new Blob([json])}): no Content-Type at all
        {"content-type": "text/plain;charset=UTF-8"},  # fetch with a string body
        {"content-type": "application/x-www-form-urlencoded"},  # a form
        {"content-type": "multipart/form-data; boundary=x"},
        [("content-type", "text/plain"), ("content-type", "application/json")],
    ],
    ids=["none", "text", "form", "multipart", "two"],
)
async def test_a_body_not_declared_json_is_refused_and_stores_nothing(
    api: tuple[Conveyor, httpx.AsyncClient], headers: Any
) -> None:
    app, client = api
    body = b'{"type": "add", "parameters": [1, 2]}'
    assert_error(
        await client.post(JOBS, content=body, headers=headers), 415, "UNSUPPORTED_MEDIA_TYPE"
    )
    schedule = b'{"type": "add", "parameters": [1, 2], "interval": 60}'
    response = await client.put("/api/v1/schedules/nightly", content=schedule, headers=headers)
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    response = await client.post("/api/v1/queues/default/pause", content=b"x", headers=headers)
    assert_error(response, 415, "UNSUPPORTED_MEDIA_TYPE")
    assert await job_ids(app) == []
    assert (await client.get("/api/v1/schedules")).json()["items"] == []
    assert await paused_queues(client) == []


async def test_bodyless_posts_need_no_content_type(
    api: tuple[Conveyor, httpx.AsyncClient],
) -> None:
    _, client = api
    job_id = await submitted(client)
    assert (await client.delete(f"{JOBS}/{job_id}")).status_code == 200
    assert (await client.post(f"{JOBS}/{job_id}/retry")).status_code == 202
    assert (await client.post("/api/v1/queues/default/pause")).json()["paused"] is True
    assert (await client.post("/api/v1/queues/default/resume")).json()["paused"] is False
    assert (await client.post("/api/v1/schedules", json=SCHEDULE)).status_code == 201
    assert (await client.post("/api/v1/schedules/nightly/trigger")).status_code == 202
    # An empty body under a form type (some HTTP clients' default) is no body at all.
    form = {"content-type": "application/x-www-form-urlencoded"}
    response = await client.post("/api/v1/queues/default/pause", content=b"", headers=form)
    assert response.status_code == 200, response.text


# -- Origin -------------------------------------------------------------------------------
@pytest.mark.parametrize("origin", [EVIL, "null", "http://localhost:8001", "http://localhost"])
async def test_a_foreign_origin_changes_nothing(
    api: tuple[Conveyor, httpx.AsyncClient], origin: str
) -> None:
    app, client = api
    job_id = await submitted(client)
    await client.post("/api/v1/schedules", json=SCHEDULE)
    headers = {"Origin": origin}
    for method, path, body in [
        ("POST", JOBS, ADD),
        ("DELETE", f"{JOBS}/{job_id}", None),
        ("POST", "/api/v1/queues/default/pause", None),
        ("POST", "/api/v1/schedules", {**SCHEDULE, "id": "other"}),
        ("PATCH", "/api/v1/schedules/nightly", {"enabled": False}),
        ("DELETE", "/api/v1/schedules/nightly", None),
        ("POST", "/api/v1/schedules/nightly/trigger", None),
    ]:
        response = await client.request(method, path, json=body, headers=headers)
        error = assert_error(response, 403, "FORBIDDEN")
        assert "CONVEYOR_ALLOWED_ORIGINS" in error["message"]
        assert error["details"] == {"origin": origin}
        assert "access-control-allow-origin" not in response.headers
    assert await job_ids(app) == [job_id]
    assert (await client.get(f"{JOBS}/{job_id}")).json()["status"] == JobStatus.PENDING.value
    assert await paused_queues(client) == []
    schedules = (await client.get("/api/v1/schedules")).json()["items"]
    assert [(s["id"], s["enabled"], s["lastJobId"]) for s in schedules] == [("nightly", True, None)]


@pytest.mark.parametrize(
    ("host", "origin"),
    [
        (LOCAL, f"http://{LOCAL}"),
        ("127.0.0.1:8000", "http://127.0.0.1:8000"),
        ("[::1]:8000", "http://[::1]:8000"),
        ("LocalHost:8000", "http://localhost:8000/"),
        ("localhost", "http://localhost:80"),
        ("localhost", "http://localhost"),
    ],
)
async def test_the_servers_own_origin_may_change_things(
    api: tuple[Conveyor, httpx.AsyncClient], host: str, origin: str
) -> None:
    # What the dashboard sends: its own origin, and the Host it was loaded from.
    _, client = api
    headers = {"Origin": origin, "Host": host}
    response = await client.post(JOBS, json=ADD, headers=headers)
    assert response.status_code == 202, response.text
    job_id = response.json()["jobId"]
    assert (await client.delete(f"{JOBS}/{job_id}", headers=headers)).status_code == 200


async def test_allowed_origins_may_change_things() -> None:
    async with opened(allowed_origins=("https://app.example.com", "http://LOCALHOST:3000/")) as (
        _,
        client,
    ):
        for origin in ("https://app.example.com", "http://localhost:3000"):
            response = await client.post(JOBS, json=ADD, headers={"Origin": origin})
            assert response.status_code == 202, (origin, response.text)
        forbidden = await client.post(JOBS, json=ADD, headers={"Origin": "http://app.example.com"})
        assert_error(forbidden, 403, "FORBIDDEN")
    async with opened(allowed_origins=("*",)) as (_, client):
        for origin in (EVIL, "null"):
            response = await client.post(JOBS, json=ADD, headers={"Origin": origin})
            assert response.status_code == 202, (origin, response.text)


async def test_reads_from_a_foreign_origin_are_answered_without_cors(
    api: tuple[Conveyor, httpx.AsyncClient],
) -> None:
    # The browser keeps the answer from the page: no Access-Control-Allow-Origin.
    _, client = api
    job_id = await submitted(client)
    response = await client.get(f"{JOBS}/{job_id}", headers={"Origin": EVIL})
    assert response.status_code == 200
    assert "access-control-allow-origin" not in response.headers


async def test_the_origin_check_holds_with_tokens() -> None:
    async with opened(api_tokens=("t0ken",)) as (app, client):
        headers = {"Origin": EVIL, "Authorization": "Bearer t0ken"}
        assert_error(await client.post(JOBS, json=ADD, headers=headers), 403, "FORBIDDEN")
        assert await job_ids(app) == []


async def test_a_websocket_from_a_foreign_origin_is_refused(memory_live: Live) -> None:
    url = f"ws://127.0.0.1:{memory_live.port}/ws/jobs"
    for origin in (EVIL, "null", f"http://localhost:{memory_live.port + 1}"):
        with pytest.raises(InvalidStatus) as refused:
            async with connect(url, origin=origin):  # type: ignore[arg-type]
                pass
        assert refused.value.response.status_code == 403
    own = f"http://127.0.0.1:{memory_live.port}"
    async with connect(url, origin=own) as ws:  # type: ignore[arg-type]
        await ws.send('{"type": "ping"}')
        assert await ws.recv() == '{"type":"pong"}'


# -- Host ---------------------------------------------------------------------------------
@pytest.mark.parametrize("host", ["evil.example", "evil.example:8000", "localhost.evil.example"])
@pytest.mark.parametrize("path", ["/", JOBS, "/openapi.json", "/healthz"])
async def test_a_foreign_host_is_refused_without_tokens(
    api: tuple[Conveyor, httpx.AsyncClient], host: str, path: str
) -> None:
    _, client = api
    error = assert_error(await client.get(path, headers={"Host": host}), 403, "FORBIDDEN")
    assert "CONVEYOR_ALLOWED_HOSTS" in error["message"]
    assert error["details"] == {"host": host}


async def test_a_rebound_name_cannot_read_a_live_server(memory_live: Live) -> None:
    # DNS rebinding: the browser connects to 127.0.0.1 but names the attacker's host.
    async with httpx.AsyncClient(base_url=memory_live.base_url, timeout=10) as client:
        job_id = await submitted(client)
        rebound = {"Host": f"rebind.evil.example:{memory_live.port}"}
        assert_error(await client.get(f"{JOBS}/{job_id}", headers=rebound), 403, "FORBIDDEN")
        assert (await client.get(f"{JOBS}/{job_id}")).status_code == 200


@pytest.mark.parametrize(
    "host",
    [
        "localhost",
        LOCAL,
        "LOCALHOST:8000",
        "app.localhost:5173",
        "127.0.0.1:8000",
        "[::1]:8000",
        "192.168.1.20:8000",  # an address cannot be rebound
    ],
)
async def test_local_hosts_are_accepted(api: tuple[Conveyor, httpx.AsyncClient], host: str) -> None:
    _, client = api
    assert (await client.get(JOBS, headers={"Host": host})).status_code == 200


async def test_allowed_hosts_and_the_bind_name_are_accepted() -> None:
    conveyor = make_conveyor(allowed_hosts=("Conveyor.Internal", ".corp.example"))
    transport = httpx.ASGITransport(app=create_app(conveyor, bind_host="box.lan"))
    async with httpx.AsyncClient(transport=transport, base_url="http://box.lan:8000") as client:
        for host in ("conveyor.internal:8000", "corp.example", "a.b.corp.example", "box.lan"):
            assert (await client.get(JOBS, headers={"Host": host})).status_code == 200, host
        for host in ("corp.example.evil.com", "xcorp.example", "conveyor.internal.evil"):
            assert_error(await client.get(JOBS, headers={"Host": host}), 403, "FORBIDDEN")
    await conveyor.aclose()


async def test_with_tokens_any_host_is_accepted_with_a_valid_token() -> None:
    async with opened(api_tokens=("t0ken",)) as (_, client):
        foreign = {"Host": "conveyor.example.com"}
        assert_error(await client.get(JOBS, headers=foreign), 401, "UNAUTHORIZED")
        response = await client.get(JOBS, headers={**foreign, "Authorization": "Bearer t0ken"})
        assert response.status_code == 200


async def test_a_websocket_under_a_foreign_host_is_refused() -> None:
    rec = Recorder()
    scope = {
        "type": "websocket",
        "path": "/ws/jobs",
        "root_path": "",
        "headers": [(b"host", b"evil.example:8000")],
    }
    await SameOriginMiddleware(rec.app)(scope, rec.receive_from([]), rec.send)
    assert not rec.app_ran
    assert rec.sent == [{"type": "websocket.close", "code": 1008, "reason": "forbidden"}]


# -- what keeps working -------------------------------------------------------------------
async def test_the_readme_curl_example_still_works(memory_live: Live) -> None:
    # curl -si -X POST localhost:8000/api/v1/jobs -H 'content-type: application/json' -d ...
    headers = {
        "Host": f"localhost:{memory_live.port}",
        "User-Agent": "curl/8.5.0",
        "Accept": "*/*",
        "content-type": "application/json",
    }
    body = b'{"type": "echo", "parameters": {"value": "https://example.com/cat.png"}}'
    async with httpx.AsyncClient(base_url=memory_live.base_url, timeout=10) as client:
        response = await client.post(JOBS, content=body, headers=headers)
        assert response.status_code == 202, response.text
        assert response.headers["location"] == f"{JOBS}/{response.json()['jobId']}"
        polled = await client.get(response.headers["location"], headers=headers)
        assert polled.json()["status"] == "pending"


# -- the pieces ---------------------------------------------------------------------------
@pytest.mark.parametrize(
    ("authority", "expected"),
    [
        ("localhost", ("localhost", None)),
        ("LocalHost:8000", ("localhost", 8000)),
        ("[::1]:8000", ("::1", 8000)),
        ("[::1]", ("::1", None)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("evil.example@127.0.0.1", None),
        ("127.0.0.1/x", None),
        ("127.0.0.1:", None),
        ("127.0.0.1:123456", None),
        ("", None),
        ("a b", None),
    ],
)
def test_split_authority(authority: str, expected: tuple[str, int | None] | None) -> None:
    assert split_authority(authority) == expected


def test_host_allowed() -> None:
    assert host_allowed("[fe80::1]:8000", ())
    assert not host_allowed("evil.example", ())
    assert not host_allowed("127.0.0.1.nip.io", ())
    assert host_allowed("evil.example", ("*",))


def test_same_origin() -> None:
    assert same_origin("https://conveyor.example.com", "conveyor.example.com")  # TLS proxy
    assert same_origin("https://conveyor.example.com", "conveyor.example.com:443")
    assert not same_origin("https://conveyor.example.com", "conveyor.example.com:80")
    assert not same_origin("chrome-extension://abc", "abc")
    assert not same_origin("http://localhost:8000", None)
    assert not same_origin("null", "localhost")


def test_settings_read_the_environment() -> None:
    settings = Settings.from_env(
        {
            "CONVEYOR_ALLOWED_ORIGINS": "https://app.example.com, http://localhost:3000",
            "CONVEYOR_ALLOWED_HOSTS": "conveyor.internal,,",
            "CONVEYOR_ALLOW_INSECURE_NO_AUTH": "1",
        }
    )
    assert settings.allowed_origins == ("https://app.example.com", "http://localhost:3000")
    assert settings.allowed_hosts == ("conveyor.internal",)
    assert settings.allow_insecure_no_auth is True
    assert Settings.from_env({}).allow_insecure_no_auth is False
