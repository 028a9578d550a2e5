"""No request, however malformed, gets a 5xx: each answer is a 4xx in the error shape."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest

from .conftest import assert_error

JOBS = "/api/v1/jobs"
OK = {"type": "add", "parameters": {"a": 1, "b": 2}}


def body(**changes: Any) -> dict[str, Any]:
    return {**OK, **changes}


def raw(content: bytes) -> dict[str, Any]:
    return {"content": content, "headers": {"content-type": "application/json"}}


async def chunks(*parts: bytes) -> AsyncIterator[bytes]:
    for part in parts:
        yield part


# (method, path, request keyword arguments, expected status, expected code)
CASES: list[tuple[str, str, dict[str, Any], int, str]] = [
    # malformed bodies
    (
        "POST",
        JOBS,
        {"content": b"{not json", "headers": {"content-type": "application/json"}},
        422,
        "VALIDATION_ERROR",
    ),
    (
        "POST",
        JOBS,
        {"content": b"", "headers": {"content-type": "application/json"}},
        422,
        "VALIDATION_ERROR",
    ),
    (
        "POST",
        JOBS,
        {"content": b"   ", "headers": {"content-type": "application/json"}},
        422,
        "VALIDATION_ERROR",
    ),
    ("POST", JOBS, raw(b"NaN"), 422, "VALIDATION_ERROR"),
    ("POST", JOBS, raw(b"1e400"), 422, "VALIDATION_ERROR"),
    ("POST", JOBS, raw(b"[" * 100_000 + b"]" * 100_000), 422, "VALIDATION_ERROR"),
    (
        "POST",
        JOBS,
        raw(b'{"type":"add","parameters":{"a":' + b"[" * 100_000 + b"]" * 100_000 + b',"b":1}}'),
        422,
        "VALIDATION_ERROR",
    ),
    (
        "POST",
        JOBS,
        raw(b'{"type":"add","parameters":{"a":' + b"[" * 1000 + b"]" * 1000 + b',"b":1}}'),
        422,
        "VALIDATION_ERROR",
    ),
    (
        "POST",
        JOBS,
        raw(b'{"type":"anything","parameters":{"x":' + b"[" * 1000 + b"]" * 1000 + b"}}"),
        422,
        "VALIDATION_ERROR",
    ),
    ("POST", JOBS, raw(b'{"type": "\xff\xfe"}'), 422, "VALIDATION_ERROR"),
    (
        "POST",
        JOBS,
        raw(b'{"type": "add", "parameters": {"a": "\\ud800", "b": 1}}'),
        422,
        "VALIDATION_ERROR",
    ),
    ("POST", JOBS, raw(b"\x00\x01\x02"), 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": []}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": "add"}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": None}, 422, "VALIDATION_ERROR"),
    (
        "POST",
        JOBS,
        raw(b'{"type":"add","parameters":{"a":1,"b":2}} trailing'),
        422,
        "VALIDATION_ERROR",
    ),
    # wrong content types
    ("POST", JOBS, {"data": {"type": "add"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    (
        "POST",
        JOBS,
        {"content": b'{"type":"add"}', "headers": {"content-type": "text/plain"}},
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    ("POST", JOBS, {"files": {"f": b"x"}}, 415, "UNSUPPORTED_MEDIA_TYPE"),
    (
        "POST",
        JOBS,
        {"content": b'{"type":"add"}', "headers": {"content-type": "application/xml"}},
        415,
        "UNSUPPORTED_MEDIA_TYPE",
    ),
    # wrong field types and ranges
    ("POST", JOBS, {"json": {"parameters": {}}}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(type=5)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(type="")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(type="x" * 1_100_000)}, 413, "PAYLOAD_TOO_LARGE"),
    ("POST", JOBS, {"json": body(type="x" * 500_000)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(type="nope" * 50_000)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(type=["add"])}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(parameters="a=1")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(parameters=5)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(parameters=None)}, 422, "VALIDATION_ERROR"),
    (
        "POST",
        JOBS,
        {"json": body(parameters={"a": "x" * 500_000, "b": 1})},
        422,
        "VALIDATION_ERROR",
    ),
    ("POST", JOBS, {"json": body(parameters={"k" * 100_000: 1})}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(delay=-1)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(delay="10")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(delay=1e300)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(delay=True)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(runAt="tomorrow")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(runAt="2030-01-01T00:00:00")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(runAt="2030-13-45T00:00:00Z")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(runAt="0001-01-01T00:00:00+14:00")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(runAt="9999-12-31T23:59:59Z")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(runAt=1700000000)}, 422, "VALIDATION_ERROR"),
    (
        "POST",
        JOBS,
        {"json": body(runAt="2030-01-01T00:00:00Z" + "0" * 100)},
        422,
        "VALIDATION_ERROR",
    ),
    ("POST", JOBS, {"json": body(priority=1_000_001)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(priority=-(10**30))}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(priority=1.5)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(priority="high")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(maxRetries=-1)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(maxRetries=10**6)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(timeout=0)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(timeout=-5)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(queue="")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(queue="a/b")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(queue="q\n")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(queue="q" * 101)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(idempotencyKey="")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(idempotencyKey="k" * 256)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(idempotencyKey=5)}, 422, "VALIDATION_ERROR"),
    (
        "POST",
        JOBS,
        {"json": OK, "headers": {"Idempotency-Key": "k" * 256}},
        422,
        "VALIDATION_ERROR",
    ),
    ("POST", JOBS, {"json": body(callbackUrl="ftp://example.com/x")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(callbackUrl="not a url")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(callbackUrl="http://[::1/x")}, 422, "VALIDATION_ERROR"),
    (
        "POST",
        JOBS,
        {"json": body(callbackUrl="http://example.com:99999/")},
        422,
        "VALIDATION_ERROR",
    ),
    ("POST", JOBS, {"json": body(callbackUrl="https://")}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(callbackSecret=123)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(unknownField=1)}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": body(max_retries=1)}, 422, "VALIDATION_ERROR"),
    # hostile ids and paths
    ("GET", JOBS + "/../../etc/passwd", {}, 404, "NOT_FOUND"),
    ("GET", JOBS + "/..%2F..%2Fetc%2Fpasswd", {}, 404, "NOT_FOUND"),
    ("GET", JOBS + "/%2e%2e", {}, 404, "NOT_FOUND"),
    ("GET", JOBS + "/" + "a" * 10_000, {}, 404, "NOT_FOUND"),
    ("GET", JOBS + "/%00", {}, 404, "NOT_FOUND"),
    ("GET", JOBS + "/%ff%fe", {}, 404, "NOT_FOUND"),
    ("GET", JOBS + "/'%20OR%201=1--", {}, 404, "NOT_FOUND"),
    ("DELETE", JOBS + "/" + "a" * 10_000, {}, 404, "NOT_FOUND"),
    ("GET", JOBS + "/" + "b" * 60_000, {}, 404, "NOT_FOUND"),
    ("POST", JOBS + "/..%2F..%2Fx/retry", {}, 404, "NOT_FOUND"),
    ("POST", JOBS + "/" + "😀" * 100 + "/retry", {}, 404, "NOT_FOUND"),
    ("GET", "/api/v2/jobs", {}, 404, "NOT_FOUND"),
    ("GET", "/nowhere", {}, 404, "NOT_FOUND"),
    ("GET", "/" + "x" * 10_000, {}, 404, "NOT_FOUND"),
    # wrong methods
    ("PUT", JOBS, {"json": OK}, 405, "METHOD_NOT_ALLOWED"),
    ("PATCH", JOBS + "/abc", {"json": {}}, 405, "METHOD_NOT_ALLOWED"),
    ("DELETE", JOBS, {}, 405, "METHOD_NOT_ALLOWED"),
    ("GET", JOBS + "/abc/retry", {}, 405, "METHOD_NOT_ALLOWED"),
    ("POST", "/healthz", {}, 405, "METHOD_NOT_ALLOWED"),
    # hostile queries and headers
    ("GET", JOBS, {"params": {"limit": "-1"}}, 422, "VALIDATION_ERROR"),
    ("GET", JOBS, {"params": {"limit": "9" * 100}}, 422, "VALIDATION_ERROR"),
    ("GET", JOBS, {"params": {"status": "%ff"}}, 422, "VALIDATION_ERROR"),
    ("GET", JOBS + "?status=%ff%fe", {}, 422, "VALIDATION_ERROR"),
    ("GET", JOBS, {"params": {"cursor": "\x00"}}, 422, "VALIDATION_ERROR"),
    ("POST", JOBS, {"json": OK, "headers": {"content-length": "abc"}}, 400, "BAD_REQUEST"),
]


@pytest.mark.parametrize(
    ("method", "path", "kwargs", "status", "code"),
    CASES,
    ids=[f"{i}-{m}-{p[:30]}" for i, (m, p, *_rest) in enumerate(CASES)],
)
async def test_hostile_request(
    client: httpx.AsyncClient,
    method: str,
    path: str,
    kwargs: dict[str, Any],
    status: int,
    code: str,
) -> None:
    response = await client.request(method, path, **kwargs)
    error = assert_error(response, status, code)
    assert len(response.content) < 20_000  # nothing huge is echoed back
    if status == 405:
        assert "allow" in response.headers
    assert "Traceback" not in error["message"]


async def test_chunked_garbage(client: httpx.AsyncClient) -> None:
    response = await client.post(
        JOBS,
        content=chunks(b'{"type": "add", ', b"\xff\xff", b"}"),
        headers={"content-type": "application/json"},
    )
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_validation_errors_are_field_level(client: httpx.AsyncClient) -> None:
    response = await client.post(JOBS, json=body(priority="high", delay=-1, extra=1))
    error = assert_error(response, 422, "VALIDATION_ERROR")
    locs = sorted(tuple(e["loc"]) for e in error["details"]["errors"])
    assert locs == [("body", "delay"), ("body", "extra"), ("body", "priority")]
    assert all(set(e) == {"loc", "message", "type"} for e in error["details"]["errors"])


async def test_huge_invalid_input_is_not_echoed(client: httpx.AsyncClient) -> None:
    secret = "s" * 400_000
    response = await client.post(JOBS, json=body(priority=secret))
    assert_error(response, 422, "VALIDATION_ERROR")
    assert secret[:1000] not in response.text


async def test_accepted_edge_values(client: httpx.AsyncClient) -> None:
    for extra in (
        {"priority": 1_000_000},
        {"priority": -1_000_000},
        {"delay": 0},
        {"delay": 0.5},
        {"maxRetries": 0},
        {"timeout": 0.001},
        {"runAt": "1999-01-01T00:00:00Z"},
        {"runAt": "2030-01-01t00:00:00.123456789z"},
        {"callbackUrl": "http://localhost:8080/hook?x=1"},
        {"queue": "ünïcode queue"},
        {"idempotencyKey": "k" * 255},
    ):
        response = await client.post(JOBS, json=body(**extra))
        assert response.status_code == 202, (extra, response.text)
    for content_type in ("application/json; charset=utf-8", "application/vnd.api+json"):
        response = await client.post(
            JOBS,
            content=b'{"type":"add","parameters":[1,2]}',
            headers={"content-type": content_type},
        )
        assert response.status_code == 202, content_type
