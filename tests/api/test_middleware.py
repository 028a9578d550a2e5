"""Bearer auth and the request body limit."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from starlette.types import Message, Receive, Scope, Send

from conveyor.api.middleware import BearerAuthMiddleware, BodyLimitMiddleware

from .conftest import MakeClient, assert_error

JOBS = "/api/v1/jobs"
OK = {"type": "add", "parameters": {"a": 1, "b": 2}}


async def chunks(size: int, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield b" " * size


# -- body limit -------------------------------------------------------------------------
async def test_declared_length_over_limit(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=1024)
    response = await client.post(JOBS, json={**OK, "pad": "x" * 2000})
    error = assert_error(response, 413, "PAYLOAD_TOO_LARGE")
    assert "1024" in error["message"]


async def test_body_at_limit_is_read(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=1024)
    content = b'{"type":"add","parameters":[1,2]}'
    content += b" " * (1024 - len(content))
    json = {"content-type": "application/json"}
    assert (await client.post(JOBS, content=content, headers=json)).status_code == 202
    too_large = await client.post(JOBS, content=content + b" ", headers=json)
    assert_error(too_large, 413, "PAYLOAD_TOO_LARGE")


async def test_chunked_body_over_limit(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=1024)
    response = await client.post(
        JOBS, content=chunks(300, 10), headers={"content-type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


async def test_chunked_body_under_limit(make_client: MakeClient) -> None:
    client = await make_client(max_body_bytes=1024)

    async def parts() -> AsyncIterator[bytes]:
        yield b'{"type":"add",'
        yield b'"parameters":[1,2]}'

    response = await client.post(
        JOBS, content=parts(), headers={"content-type": "application/json"}
    )
    assert response.status_code == 202, response.text


async def test_default_limit_is_one_mebibyte(client: httpx.AsyncClient) -> None:
    response = await client.post(JOBS, content=b" " * (1_048_576 + 1))
    assert_error(response, 413, "PAYLOAD_TOO_LARGE")


class Recorder:
    """A raw ASGI driver: what the middleware sent, and whether the app ran."""

    def __init__(self) -> None:
        self.sent: list[Message] = []
        self.app_ran = False
        self.reads = 0

    async def app(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.app_ran = True
        while True:
            message = await receive()
            if not message.get("more_body"):
                break
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    async def send(self, message: Message) -> None:
        self.sent.append(message)

    def receive_from(self, bodies: list[bytes]) -> Receive:
        async def receive() -> Message:
            self.reads += 1
            if not bodies:
                return {"type": "http.disconnect"}
            chunk = bodies.pop(0)
            return {"type": "http.request", "body": chunk, "more_body": bool(bodies)}

        return receive


def http_scope(path: str = JOBS, headers: list[tuple[bytes, bytes]] | None = None) -> Scope:
    return {
        "type": "http",
        "method": "POST",
        "path": path,
        "root_path": "",
        "headers": headers or [],
    }


async def test_declared_length_is_refused_before_reading() -> None:
    rec = Recorder()
    middleware = BodyLimitMiddleware(rec.app, max_body_bytes=10)
    scope = http_scope(headers=[(b"content-length", b"1000000000")])
    await middleware(scope, rec.receive_from([b"x" * 100]), rec.send)
    assert not rec.app_ran
    assert rec.reads == 0
    assert rec.sent[0]["status"] == 413


async def test_streamed_body_stops_at_the_limit() -> None:
    rec = Recorder()
    middleware = BodyLimitMiddleware(rec.app, max_body_bytes=10)
    await middleware(http_scope(), rec.receive_from([b"x" * 6] * 100), rec.send)
    assert rec.reads == 2  # the second chunk crosses the limit; nothing more is read
    assert rec.sent[0]["status"] == 413


@pytest.mark.parametrize("length", [b"-1", b"1e3", b"", b"99999999999999999999999"])
async def test_bad_content_length(length: bytes) -> None:
    rec = Recorder()
    middleware = BodyLimitMiddleware(rec.app, max_body_bytes=10)
    await middleware(
        http_scope(headers=[(b"content-length", length)]), rec.receive_from([]), rec.send
    )
    assert not rec.app_ran
    assert rec.sent[0]["status"] == 400


# -- auth -------------------------------------------------------------------------------
TOKENS = ("s3cret-token", "second-token")


@pytest.fixture
async def secured(make_client: MakeClient) -> httpx.AsyncClient:
    return await make_client(api_tokens=TOKENS)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        bearer("wrong"),
        bearer(""),
        bearer("s3cret-token-and-more"),
        bearer("s3cret"),
        {"Authorization": "Basic czNjcmV0LXRva2Vu"},
        {"Authorization": "s3cret-token"},
        {"Authorization": "Bearer"},
        {"Authorization": "Bearer ünï".encode()},
    ],
)
@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", JOBS),
        ("POST", JOBS),
        ("GET", JOBS + "/x"),
        ("GET", "/api/v1/unknown"),
        ("GET", "/metrics"),
        ("GET", "/ws/jobs"),
        ("GET", "/api"),
    ],
)
async def test_unauthorized(
    secured: httpx.AsyncClient, method: str, path: str, headers: dict[str, str]
) -> None:
    response = await secured.request(
        method, path, headers=headers, json=OK if method == "POST" else None
    )
    assert_error(response, 401, "UNAUTHORIZED")
    assert response.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize("token", TOKENS)
async def test_every_token_is_accepted(secured: httpx.AsyncClient, token: str) -> None:
    response = await secured.post(JOBS, json=OK, headers=bearer(token))
    assert response.status_code == 202
    job_id = response.json()["jobId"]
    assert (await secured.get(f"{JOBS}/{job_id}", headers=bearer(token))).status_code == 200
    lower = {"authorization": f"bearer  {token} "}
    assert (await secured.get(JOBS, headers=lower)).status_code == 200


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/openapi.json", "/docs"])
async def test_open_paths(secured: httpx.AsyncClient, path: str) -> None:
    assert (await secured.get(path)).status_code == 200


async def test_root_is_open(secured: httpx.AsyncClient) -> None:
    # The dashboard page itself is open; the API calls it makes carry the token.
    page = await secured.get("/")
    assert page.status_code == 200
    assert "<title>Conveyor</title>" in page.text
    assert_error(await secured.get("/api/v1/queues"), 401, "UNAUTHORIZED")


async def test_auth_comes_before_the_body_limit(make_client: MakeClient) -> None:
    client = await make_client(api_tokens=TOKENS, max_body_bytes=10)
    assert_error(await client.post(JOBS, json=OK), 401, "UNAUTHORIZED")
    assert_error(
        await client.post(JOBS, json=OK, headers=bearer(TOKENS[0])), 413, "PAYLOAD_TOO_LARGE"
    )


async def test_no_tokens_no_auth(client: httpx.AsyncClient) -> None:
    assert (await client.get(JOBS)).status_code == 200


async def test_websocket_without_token_is_closed() -> None:
    rec = Recorder()
    middleware = BearerAuthMiddleware(rec.app, TOKENS)
    scope: dict[str, Any] = {"type": "websocket", "path": "/ws/jobs", "headers": []}
    await middleware(scope, rec.receive_from([]), rec.send)
    assert not rec.app_ran
    assert rec.sent == [{"type": "websocket.close", "code": 1008, "reason": "unauthorized"}]


async def test_websocket_with_token_passes() -> None:
    rec = Recorder()
    middleware = BearerAuthMiddleware(rec.app, TOKENS)
    scope = {
        "type": "websocket",
        "path": "/ws/jobs",
        "headers": [(b"authorization", b"Bearer second-token")],
    }
    await middleware(scope, rec.receive_from([]), rec.send)
    assert rec.app_ran


async def test_duplicate_authorization_headers_are_refused() -> None:
    rec = Recorder()
    middleware = BearerAuthMiddleware(rec.app, TOKENS)
    headers = [(b"authorization", b"Bearer wrong"), (b"authorization", b"Bearer s3cret-token")]
    await middleware(http_scope(headers=headers), rec.receive_from([]), rec.send)
    assert not rec.app_ran
    assert rec.sent[0]["status"] == 401


async def test_root_path_is_stripped() -> None:
    rec = Recorder()
    middleware = BearerAuthMiddleware(rec.app, TOKENS)
    scope = {**http_scope("/prefix/healthz"), "root_path": "/prefix"}
    await middleware(scope, rec.receive_from([]), rec.send)
    assert rec.app_ran
    rec = Recorder()
    middleware = BearerAuthMiddleware(rec.app, TOKENS)
    scope = {**http_scope("/prefix/api/v1/jobs"), "root_path": "/prefix"}
    await middleware(scope, rec.receive_from([]), rec.send)
    assert not rec.app_ran
