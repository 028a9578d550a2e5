"""The raw ASGI path for ``POST /api/v1/jobs`` answers exactly as the FastAPI route does.

Each request goes to two apps, one with the fast path and one without, each on its own
in-memory store; status, headers and bodies must match byte for byte (a new job's id and
creation time aside, which differ by nature).
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest
from starlette.types import Scope

from conveyor import Conveyor
from conveyor.api import create_app
from conveyor.api.submission import Submitter
from conveyor.errors import BackendUnavailableError, QueueFullError

from .conftest import make_conveyor

JOBS = "/api/v1/jobs"
TOKEN = "s3cret"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


def js(body: Any) -> dict[str, Any]:
    return {"json": body}


def raw(content: bytes, content_type: str | None = "application/json") -> dict[str, Any]:
    headers = {} if content_type is None else {"Content-Type": content_type}
    return {"content": content, "headers": headers}


def keyed(key: str, body: Any) -> dict[str, Any]:
    return {"json": body, "headers": {"Idempotency-Key": key}}


ADD = {"type": "add", "parameters": {"a": 1, "b": 2}}
PLAIN = b'{"type": "add", "parameters": [1, 2]}'
DEEP = b'{"type": "anything", "parameters": [' + b"[" * 2000 + b"]" * 2001 + b"}"

# (name, request keyword arguments (built fresh per app), served by the fast path)
Case = tuple[str, Callable[[], dict[str, Any]], bool]
CASES: list[Case] = [
    ("kwargs", lambda: js(ADD), True),
    ("positional", lambda: js({"type": "add", "parameters": [1, 2]}), True),
    (
        "all options",
        lambda: js(
            {
                "type": "send_email",
                "parameters": {"to": "a@example.com", "cc": ["b@example.com"]},
                "queue": "q1",
                "priority": 7,
                "delay": 1.5,
                "maxRetries": 3,
                "timeout": 10,
                "callbackUrl": "https://example.com/hook",
                "callbackSecret": "x",
            }
        ),
        True,
    ),
    ("run at", lambda: js({"type": "at", "parameters": ["2030-01-01T00:00:00Z"]}), True),
    ("runAt field", lambda: js({**ADD, "runAt": "2030-01-01T00:00:00+02:00"}), True),
    ("untyped", lambda: js({"type": "anything", "parameters": {"x": {"deep": [1, None]}}}), True),
    ("var positional", lambda: js({"type": "total", "parameters": [1, 2.5, 3]}), True),
    ("var keyword", lambda: js({"type": "tagged", "parameters": [1]}), True),
    ("body key", lambda: js({**ADD, "idempotencyKey": "k1"}), True),
    ("body key again", lambda: js({**ADD, "idempotencyKey": "k1"}), True),
    ("header key", lambda: keyed("k2", ADD), True),
    ("header key again", lambda: keyed("k2", ADD), True),
    ("header and body agree", lambda: keyed("k3", {**ADD, "idempotencyKey": "k3"}), True),
    ("header and body differ", lambda: keyed("k4", {**ADD, "idempotencyKey": "k5"}), True),
    ("header key 255", lambda: keyed("k" * 255, ADD), True),
    ("header key too long", lambda: keyed("k" * 256, ADD), False),
    ("header key empty", lambda: keyed("", ADD), False),
    (
        "header key latin-1",
        lambda: {"json": ADD, "headers": {"Idempotency-Key": "k\xe9".encode("latin-1")}},
        True,
    ),
    (
        "two header keys",
        lambda: {"json": ADD, "headers": [("Idempotency-Key", "a"), ("Idempotency-Key", "b")]},
        False,
    ),
    (
        "two content types",
        lambda: {
            "content": b'{"type": "add", "parameters": [1, 2]}',
            "headers": [("Content-Type", "text/plain"), ("Content-Type", "application/json")],
        },
        False,
    ),
    # invalid submissions
    ("unknown task", lambda: js({"type": "nope"}), True),
    ("wrong parameter type", lambda: js({"type": "add", "parameters": {"a": "1", "b": 2}}), True),
    ("missing parameter", lambda: js({"type": "add", "parameters": {"a": 1}}), True),
    ("surplus parameter", lambda: js({"type": "add", "parameters": [1, 2, 3]}), True),
    (
        "unexpected parameter",
        lambda: js({"type": "add", "parameters": {"a": 1, "b": 2, "c": 3}}),
        True,
    ),
    ("extra field", lambda: js({**ADD, "colour": "red"}), True),
    (
        "many bad fields",
        lambda: js({"type": 1, "parameters": 2, "priority": "x", "delay": -1}),
        True,
    ),
    ("empty type", lambda: js({"type": ""}), True),
    ("no type", lambda: js({"parameters": []}), True),
    ("bad queue", lambda: js({**ADD, "queue": "a/b"}), True),
    ("priority float", lambda: js({**ADD, "priority": 5.0}), True),
    ("priority bool", lambda: js({**ADD, "priority": True}), True),
    ("delay int", lambda: js({**ADD, "delay": 5}), True),
    ("delay too long", lambda: js({**ADD, "delay": 1e12}), True),
    ("bad runAt", lambda: js({**ADD, "runAt": "tomorrow"}), True),
    ("private callback", lambda: js({**ADD, "callbackUrl": "http://127.0.0.1/x"}), True),
    ("datetime parameter", lambda: js({"type": "at", "parameters": ["yesterday"]}), True),
    ("array body", lambda: js([ADD]), True),
    ("string body", lambda: js("add"), True),
    ("null body", lambda: raw(b"null"), True),
    ("number body", lambda: raw(b"12"), True),
    ("empty body", lambda: raw(b""), True),
    ("blank body", lambda: raw(b" \n\t "), True),
    ("malformed JSON", lambda: raw(b'{"type": "add",'), True),
    ("trailing garbage", lambda: raw(b'{"type": "add"} x'), True),
    ("invalid UTF-8", lambda: raw(b'{"type": "\xff"}'), True),
    ("lone surrogate", lambda: raw(b'{"type": "\\ud800"}'), True),
    ("NaN", lambda: raw(b'{"type": "total", "parameters": [NaN]}'), True),
    (
        "huge integer",
        lambda: raw(b'{"type": "anything", "parameters": [1' + b"0" * 40 + b"]}"),
        True,
    ),
    ("deep nesting", lambda: raw(DEEP), True),
    ("duplicate keys", lambda: raw(b'{"type": "nope", "type": "add", "parameters": [1, 2]}'), True),
    # content types
    # refused by the JSON body middleware before either path
    ("no content type", lambda: raw(PLAIN, None), False),
    ("json charset", lambda: raw(PLAIN, "application/json; charset=utf-8"), True),
    ("json suffix", lambda: raw(PLAIN, "application/merge-patch+json"), True),
    ("upper case", lambda: raw(PLAIN, "Application/JSON"), True),
    ("text plain", lambda: raw(PLAIN, "text/plain"), False),
    ("form", lambda: {"data": {"type": "add"}}, False),
    ("no content type, no body", lambda: raw(b"", None), True),
    # size limits (max_body_bytes is 5000 here)
    # refused by the body limit middleware before either path
    ("declared too large", lambda: js({**ADD, "idempotencyKey": "x" * 6000}), False),
    (
        "chunked too large",
        lambda: {
            "content": chunks(b'{"type": "add", "x": "', b"x" * 6000, b'"}'),
            "headers": {"Content-Type": "application/json"},
        },
        True,
    ),
    (
        "chunked ok",
        lambda: {
            "content": chunks(b'{"type": "add", ', b'"parameters": [1, 2]}'),
            "headers": {"Content-Type": "application/json"},
        },
        True,
    ),
    # not this path: FastAPI either way
    ("trailing slash", lambda: js(ADD), False),
    ("delete", dict, False),
    ("put", lambda: js(ADD), False),
]

PATHS = {"trailing slash": JOBS + "/"}
METHODS = {"delete": "DELETE", "put": "PUT"}


def normalized(response: httpx.Response, root: str) -> tuple[int, list[tuple[str, str]], bytes]:
    """Status, headers in order and body; a new job's id and time replaced by markers."""
    body = response.content
    headers = list(response.headers.multi_items())
    if response.status_code in (200, 202):
        decoded = response.json()
        job_id = decoded["jobId"]
        assert response.headers["location"] == f"{root}{JOBS}/{job_id}"
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT[\d:.]+Z", decoded["createdAt"])
        body = body.replace(job_id.encode(), b"<id>").replace(
            decoded["createdAt"].encode(), b"<at>"
        )
        headers = [(k, v.replace(job_id, "<id>")) for k, v in headers if k != "content-length"]
    return response.status_code, headers, body


class Pair:
    """The same requests to an app with the fast path and one without."""

    def __init__(self, root: str = "", **settings: Any) -> None:
        self.root = root
        self.fast_conveyor = make_conveyor(max_body_bytes=5000, **settings)
        self.slow_conveyor = make_conveyor(max_body_bytes=5000, **settings)

        def client(conveyor: Conveyor, fast: bool) -> httpx.AsyncClient:
            app = create_app(conveyor, fast_submit=fast)
            # Bugs are answered (500) rather than raised, so both paths can be compared.
            transport = httpx.ASGITransport(app=app, root_path=root, raise_app_exceptions=False)
            return httpx.AsyncClient(transport=transport, base_url="http://test")

        self.fast = client(self.fast_conveyor, True)
        self.slow = client(self.slow_conveyor, False)

    async def request(
        self, method: str, path: str, make: Callable[[], dict[str, Any]]
    ) -> tuple[httpx.Response, httpx.Response]:
        url = self.root + path
        fast = await self.fast.request(method, url, **make())
        slow = await self.slow.request(method, url, **make())
        return fast, slow

    async def aclose(self) -> None:
        for c in (self.fast, self.slow):
            await c.aclose()
        for a in (self.fast_conveyor, self.slow_conveyor):
            await a.aclose()


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count the requests the fast path serves itself."""
    calls: list[int] = []
    original = Submitter.answer_http

    async def counted(self: Submitter, scope: Scope, *args: Any) -> Any:
        if "endpoint" not in scope:  # the router sets it; the fast path runs before it
            calls.append(1)
        return await original(self, scope, *args)

    monkeypatch.setattr(Submitter, "answer_http", counted)
    return calls


@pytest.mark.parametrize("root", ["", "/prefix"])
async def test_fast_path_answers_as_the_route_does(root: str, served: list[int]) -> None:
    pair = Pair(root)
    try:
        for name, make, fast_path in CASES:
            before = len(served)
            fast, slow = await pair.request(METHODS.get(name, "POST"), PATHS.get(name, JOBS), make)
            assert normalized(fast, root) == normalized(slow, root), name
            assert len(served) - before == int(fast_path), name
    finally:
        await pair.aclose()


async def test_the_table_covers_every_answer(served: list[int]) -> None:
    seen: set[int] = set()
    pair = Pair()
    try:
        for name, make, _ in CASES:
            fast, _slow = await pair.request(METHODS.get(name, "POST"), PATHS.get(name, JOBS), make)
            seen.add(fast.status_code)
    finally:
        await pair.aclose()
    assert {200, 202, 413, 415, 422, 307, 405} <= seen


async def test_auth_still_applies(served: list[int]) -> None:
    pair = Pair(api_tokens=[TOKEN])
    try:
        for make in (
            lambda: js(ADD),
            lambda: {"json": ADD, "headers": {"Authorization": "Bearer no"}},
        ):
            fast, slow = await pair.request("POST", JOBS, make)
            assert fast.status_code == 401
            assert normalized(fast, "") == normalized(slow, "")
        assert served == []
        fast, slow = await pair.request("POST", JOBS, lambda: {"json": ADD, "headers": AUTH})
        assert fast.status_code == 202
        assert normalized(fast, "") == normalized(slow, "")
        assert served == [1]
    finally:
        await pair.aclose()


@pytest.mark.parametrize(
    ("failure", "status"),
    [
        (QueueFullError("default", retry_after=2.5), 429),
        (BackendUnavailableError("disk gone"), 503),
        (OSError("driver bug"), 500),
        (RuntimeError("driver bug"), 500),
    ],
)
async def test_store_refusals_and_failures(
    failure: Exception, status: int, served: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    pair = Pair()
    try:
        for conveyor in (pair.fast_conveyor, pair.slow_conveyor):

            async def broken(*args: Any, **kwargs: Any) -> Any:
                raise failure

            monkeypatch.setattr(await conveyor.backend(), "enqueue", broken)
        fast, slow = await pair.request("POST", JOBS, lambda: js(ADD))
        assert fast.status_code == status
        assert ("retry-after" in fast.headers) == (status != 500)
        assert normalized(fast, "") == normalized(slow, "")
        assert served == [1]
    finally:
        await pair.aclose()


async def test_queue_full_by_length(served: list[int]) -> None:
    pair = Pair()
    try:
        for conveyor in (pair.fast_conveyor, pair.slow_conveyor):
            await (await conveyor.backend()).configure_queue("mail", max_length=1)
        make = lambda: js({"type": "send_email", "parameters": {"to": "x"}})  # noqa: E731
        statuses = []
        for _ in range(2):
            fast, slow = await pair.request("POST", JOBS, make)
            assert normalized(fast, "") == normalized(slow, "")
            statuses.append(fast.status_code)
        assert statuses == [202, 429]
    finally:
        await pair.aclose()


async def test_openapi_still_documents_the_route() -> None:
    conveyor = make_conveyor()
    try:
        app = create_app(conveyor)
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            spec = (await c.get("/openapi.json")).json()
            slow_app = create_app(conveyor, fast_submit=False)
            slow_transport = httpx.ASGITransport(app=slow_app)
            async with httpx.AsyncClient(transport=slow_transport, base_url="http://test") as s:
                assert spec == (await s.get("/openapi.json")).json()
        post = spec["paths"][JOBS]["post"]
        assert set(post["responses"]) >= {"200", "202", "413", "415", "422", "429", "503"}
    finally:
        await conveyor.aclose()


async def test_a_bug_answers_500_either_way(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = []
    for fast in (True, False):
        conveyor = make_conveyor()

        def broken(name: str) -> Any:
            raise RuntimeError("bug")

        monkeypatch.setattr(conveyor, "get_task", broken)
        transport = httpx.ASGITransport(
            app=create_app(conveyor, fast_submit=fast), raise_app_exceptions=False
        )
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
            answers.append(normalized(await c.post(JOBS, json=ADD), ""))
        await conveyor.aclose()
    assert answers[0] == answers[1]
    assert answers[0][0] == 500
