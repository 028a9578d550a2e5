"""The jobs endpoints: submit, get, list, cancel, retry."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import UTC, datetime

import httpx
import pytest

from conveyor import Conveyor
from conveyor.backends.base import OutcomeKind
from conveyor.job import task_error

from .conftest import assert_error, finish, submit

INSTANT = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z")


def parse(instant: str) -> float:
    assert INSTANT.fullmatch(instant), instant
    return datetime.fromisoformat(instant).timestamp()


async def test_submit_answers_202_with_location(client: httpx.AsyncClient) -> None:
    before = time.time()
    response = await client.post(
        "/api/v1/jobs", json={"type": "add", "parameters": {"a": 1, "b": 2}}
    )
    assert response.status_code == 202
    body = response.json()
    assert set(body) == {"jobId", "status", "createdAt"}
    assert body["status"] == "pending"
    assert response.headers["location"] == f"/api/v1/jobs/{body['jobId']}"
    assert before - 0.001 <= parse(body["createdAt"]) <= time.time()


async def test_get_job_shows_the_record(client: httpx.AsyncClient) -> None:
    job_id = await submit(
        client,
        type="send_email",
        parameters={"to": "a@example.com", "cc": ["b@example.com"]},
        priority=7,
        maxRetries=2,
        timeout=9.5,
        idempotencyKey="k-1",
        callbackUrl="https://hooks.example.com/done",
        callbackSecret="shh",
    )
    response = await client.get(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200
    job = response.json()
    assert job == {
        "jobId": job_id,
        "type": "send_email",
        "status": "pending",
        "queue": "mail",
        "priority": 7,
        "progress": 0,
        "parameters": {"to": "a@example.com", "cc": ["b@example.com"]},
        "attempts": 0,
        "maxRetries": 2,
        "timeout": 9.5,
        "createdAt": job["createdAt"],
        "runAt": job["runAt"],
        "idempotencyKey": "k-1",
        "callbackUrl": "https://hooks.example.com/done",
    }
    assert "shh" not in response.text
    assert parse(job["runAt"]) == pytest.approx(parse(job["createdAt"]), abs=0.002)


async def test_task_defaults_apply(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, type="send_email", parameters={"to": "x@example.com"})
    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert (job["queue"], job["maxRetries"], job["priority"]) == ("mail", 5, 0)


async def test_delay_and_run_at(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, type="add", parameters={"a": 1, "b": 2}, delay=60)
    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert parse(job["runAt"]) - parse(job["createdAt"]) == pytest.approx(60, abs=0.01)

    job_id = await submit(
        client, type="add", parameters=[1, 2], runAt="2030-01-02T03:04:05.678+01:00", queue="q2"
    )
    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["runAt"] == "2030-01-02T02:04:05.678Z"
    assert job["queue"] == "q2"


async def test_delay_with_run_at_is_refused(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/jobs",
        json={"type": "add", "parameters": [1, 2], "delay": 1, "runAt": "2030-01-01T00:00:00Z"},
    )
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_unknown_task(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/jobs", json={"type": "nope", "parameters": {}})
    error = assert_error(response, 422, "UNKNOWN_TASK")
    assert error["details"]["type"] == "nope"


async def test_get_unknown_job(client: httpx.AsyncClient) -> None:
    response = await client.get("/api/v1/jobs/0190b4c4-0000-7000-8000-000000000000")
    error = assert_error(response, 404, "NOT_FOUND")
    assert error["details"]["jobId"] == "0190b4c4-0000-7000-8000-000000000000"


# -- idempotency ------------------------------------------------------------------------
async def test_idempotency_key_in_body(client: httpx.AsyncClient) -> None:
    body = {"type": "add", "parameters": {"a": 1, "b": 2}, "idempotencyKey": "once"}
    first = await client.post("/api/v1/jobs", json=body)
    again = await client.post("/api/v1/jobs", json=body)
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json() == again.json()
    assert again.headers["location"] == first.headers["location"]


async def test_idempotency_key_header_matches_body_key(client: httpx.AsyncClient) -> None:
    body = {"type": "add", "parameters": {"a": 1, "b": 2}}
    first = await client.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "h1"})
    again = await client.post("/api/v1/jobs", json={**body, "idempotencyKey": "h1"})
    assert (first.status_code, again.status_code) == (202, 200)
    assert first.json()["jobId"] == again.json()["jobId"]
    job = (await client.get(f"/api/v1/jobs/{first.json()['jobId']}")).json()
    assert job["idempotencyKey"] == "h1"


async def test_idempotency_header_and_body_must_agree(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/jobs",
        json={"type": "add", "parameters": [1, 2], "idempotencyKey": "a"},
        headers={"Idempotency-Key": "b"},
    )
    assert_error(response, 422, "VALIDATION_ERROR")


async def test_repeat_reports_the_first_jobs_current_status(
    client: httpx.AsyncClient, conveyor: Conveyor
) -> None:
    body = {"type": "add", "parameters": [1, 2], "idempotencyKey": "done"}
    job_id = (await client.post("/api/v1/jobs", json=body)).json()["jobId"]
    await finish(await conveyor.backend(), job_id, OutcomeKind.COMPLETED, result=3)
    again = await client.post("/api/v1/jobs", json=body)
    assert again.status_code == 200
    assert again.json()["jobId"] == job_id
    assert again.json()["status"] == "completed"


async def test_concurrent_repeats_make_one_job(
    client: httpx.AsyncClient, conveyor: Conveyor
) -> None:
    body = {"type": "add", "parameters": [1, 2]}
    responses = await asyncio.gather(
        *(
            client.post("/api/v1/jobs", json=body, headers={"Idempotency-Key": "race"})
            for _ in range(25)
        )
    )
    assert sorted(r.status_code for r in responses) == [200] * 24 + [202]
    assert len({r.json()["jobId"] for r in responses}) == 1
    listing = (await client.get("/api/v1/jobs")).json()
    assert len(listing["items"]) == 1


# -- listing ----------------------------------------------------------------------------
async def test_list_pages_with_cursor(client: httpx.AsyncClient) -> None:
    ids = [await submit(client, type="add", parameters=[i, i]) for i in range(7)]
    seen: list[str] = []
    cursor = None
    pages = 0
    while True:
        params = {"limit": 3} | ({"cursor": cursor} if cursor else {})
        response = await client.get("/api/v1/jobs", params=params)
        assert response.status_code == 200
        page = response.json()
        assert set(page) == {"items", "nextCursor"}
        seen += [item["jobId"] for item in page["items"]]
        pages += 1
        cursor = page["nextCursor"]
        if cursor is None:
            break
    assert pages == 3
    assert seen == list(reversed(ids))


async def test_list_default_limit_is_50(client: httpx.AsyncClient) -> None:
    for i in range(51):
        await submit(client, type="add", parameters=[i, i])
    page = (await client.get("/api/v1/jobs")).json()
    assert len(page["items"]) == 50
    assert page["nextCursor"] is not None


async def test_list_filters(client: httpx.AsyncClient, conveyor: Conveyor) -> None:
    a = await submit(client, type="add", parameters=[1, 2])
    b = await submit(client, type="send_email", parameters={"to": "x"})
    c = await submit(client, type="add", parameters=[3, 4])
    await finish(await conveyor.backend(), c, OutcomeKind.COMPLETED, result=7)

    async def ids(**params: str) -> list[str]:
        response = await client.get("/api/v1/jobs", params=params)
        assert response.status_code == 200, response.text
        return [item["jobId"] for item in response.json()["items"]]

    assert await ids(type="add") == [c, a]
    assert await ids(queue="mail") == [b]
    assert await ids(status="completed") == [c]
    assert await ids(status="pending", type="add") == [a]
    assert await ids(type="nothing") == []


@pytest.mark.parametrize(
    "params",
    [
        {"status": "bogus"},
        {"limit": "0"},
        {"limit": "501"},
        {"limit": "ten"},
        {"cursor": "../../etc/passwd"},
        {"cursor": "x" * 201},
        {"type": "t" * 201},
    ],
)
async def test_list_refuses_bad_query(client: httpx.AsyncClient, params: dict[str, str]) -> None:
    error = assert_error(await client.get("/api/v1/jobs", params=params), 422, "VALIDATION_ERROR")
    assert error["details"]["errors"][0]["loc"][0] == "query"


async def test_list_limit_500_is_allowed(client: httpx.AsyncClient) -> None:
    assert (await client.get("/api/v1/jobs", params={"limit": 500})).status_code == 200


# -- cancel and retry -------------------------------------------------------------------
async def test_cancel_pending_job(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, type="add", parameters=[1, 2])
    response = await client.delete(f"/api/v1/jobs/{job_id}")
    assert response.status_code == 200
    job = response.json()
    assert (job["jobId"], job["status"]) == (job_id, "cancelled")
    assert INSTANT.fullmatch(job["completedAt"])
    again = await client.delete(f"/api/v1/jobs/{job_id}")
    assert_error(again, 409, "CONFLICT")


async def test_cancel_running_job(client: httpx.AsyncClient, conveyor: Conveyor) -> None:
    job_id = await submit(client, type="add", parameters=[1, 2])
    await (await conveyor.backend()).fetch(["default"], "w", 1, 30)
    running = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert running["status"] == "running"
    assert running["attempts"] == 1
    assert INSTANT.fullmatch(running["startedAt"])
    assert (await client.delete(f"/api/v1/jobs/{job_id}")).json()["status"] == "cancelled"


async def test_cancel_unknown_job(client: httpx.AsyncClient) -> None:
    assert_error(
        await client.delete("/api/v1/jobs/0190b4c4-0000-7000-8000-000000000000"), 404, "NOT_FOUND"
    )


async def test_completed_job_shows_result_and_cannot_be_cancelled(
    client: httpx.AsyncClient, conveyor: Conveyor
) -> None:
    job_id = await submit(client, type="add", parameters={"a": 1, "b": 2})
    await finish(await conveyor.backend(), job_id, OutcomeKind.COMPLETED, result={"sum": 3})
    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["status"] == "completed"
    assert job["result"] == {"sum": 3}
    assert job["progress"] == 100
    assert "error" not in job
    assert parse(job["completedAt"]) >= parse(job["startedAt"])
    assert_error(await client.delete(f"/api/v1/jobs/{job_id}"), 409, "CONFLICT")
    assert_error(await client.post(f"/api/v1/jobs/{job_id}/retry"), 409, "CONFLICT")


async def test_completed_null_result_is_shown(
    client: httpx.AsyncClient, conveyor: Conveyor
) -> None:
    job_id = await submit(client, type="add", parameters=[1, 2])
    await finish(await conveyor.backend(), job_id, OutcomeKind.COMPLETED, result=None)
    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert "result" in job
    assert job["result"] is None


async def test_failed_job_shows_error_and_can_be_retried(
    client: httpx.AsyncClient, conveyor: Conveyor
) -> None:
    job_id = await submit(client, type="add", parameters=[1, 2])
    error = task_error("boom", reason="exception", retryable=True, exception_type="ValueError")
    await finish(await conveyor.backend(), job_id, OutcomeKind.FAILED, error=error)
    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    assert job["status"] == "failed"
    assert job["error"] == {
        "code": "TASK_FAILED",
        "message": "boom",
        "details": {"reason": "exception", "retryable": True, "exceptionType": "ValueError"},
    }
    assert "result" not in job
    response = await client.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202
    retried = response.json()
    assert (retried["jobId"], retried["status"], retried["attempts"]) == (job_id, "pending", 0)
    assert "error" not in retried
    assert_error(await client.post(f"/api/v1/jobs/{job_id}/retry"), 409, "CONFLICT")


async def test_cancelled_job_can_be_retried(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, type="add", parameters=[1, 2])
    await client.delete(f"/api/v1/jobs/{job_id}")
    response = await client.post(f"/api/v1/jobs/{job_id}/retry")
    assert response.status_code == 202
    assert response.json()["status"] == "pending"


async def test_retry_unknown_job(client: httpx.AsyncClient) -> None:
    response = await client.post("/api/v1/jobs/0190b4c4-0000-7000-8000-000000000000/retry")
    assert_error(response, 404, "NOT_FOUND")


async def test_timestamps_are_utc_milliseconds(client: httpx.AsyncClient) -> None:
    job_id = await submit(client, type="add", parameters=[1, 2])
    job = (await client.get(f"/api/v1/jobs/{job_id}")).json()
    created = datetime.fromisoformat(job["createdAt"])
    assert created.tzinfo is not None
    assert created.utcoffset() == UTC.utcoffset(None)


@pytest.mark.parametrize(
    "number", ["123456789012345678901234567890", str(2**64), str(-(2**63) - 1), "9" * 100]
)
async def test_integers_that_would_not_arrive_exactly_are_refused(
    client: httpx.AsyncClient, number: str
) -> None:
    body = f'{{"type": "anything", "parameters": {{"x": {number}}}}}'
    response = await client.post(
        "/api/v1/jobs", content=body, headers={"content-type": "application/json"}
    )
    error = assert_error(response, 422, "VALIDATION_ERROR")
    assert "outside the range" in error["details"]["reason"]
    schedule = f'{{"type": "anything", "parameters": {{"x": {number}}}, "interval": 60}}'
    response = await client.post(
        "/api/v1/schedules", content=schedule, headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "VALIDATION_ERROR")
    listed = await client.get("/api/v1/jobs")
    assert listed.json()["items"] == []  # nothing stored


async def test_integers_at_the_edges_of_64_bits_arrive_exactly(client: httpx.AsyncClient) -> None:
    for number in (2**64 - 1, -(2**63), 2**53 + 1):
        body = f'{{"type": "anything", "parameters": {{"x": {number}}}}}'
        response = await client.post(
            "/api/v1/jobs", content=body, headers={"content-type": "application/json"}
        )
        assert response.status_code == 202, response.text
        job = (await client.get(response.headers["location"])).json()
        assert job["parameters"]["x"] == number
        assert isinstance(job["parameters"]["x"], int)
