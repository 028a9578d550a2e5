"""The schedules endpoints: CRUD, validation naming the field, trigger, code schedules."""

from __future__ import annotations

from datetime import datetime
from typing import Any

import httpx
import pytest

from conveyor import Conveyor
from conveyor.scheduling.schedule import fire_key

from .conftest import assert_error


def ts(instant: str) -> float:
    return datetime.fromisoformat(instant).timestamp()


async def create(client: httpx.AsyncClient, **body: Any) -> dict[str, Any]:
    response = await client.post("/api/v1/schedules", json=body)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


async def test_create_answers_201_with_location_and_the_schedule(
    client: httpx.AsyncClient,
) -> None:
    response = await client.post(
        "/api/v1/schedules",
        json={
            "id": "sums",
            "type": "add",
            "parameters": {"a": 1, "b": 2},
            "cron": "0/30 * * * * ?",
            "timezone": "Europe/Paris",
        },
    )
    assert response.status_code == 201, response.text
    assert response.headers["location"] == "/api/v1/schedules/sums"
    body = response.json()
    assert body["id"] == "sums"
    assert body["type"] == "add"
    assert body["parameters"] == {"a": 1, "b": 2}
    assert body["cron"] == "0/30 * * * * ?"
    assert body["interval"] is None
    assert body["enabled"] is True
    assert body["source"] == "api"
    assert body["misfirePolicy"] == "run_once"
    assert body["overlap"] == "allow"
    assert body["lastRunAt"] is None
    assert body["lastJobId"] is None
    next_run = ts(body["nextRunAt"])
    assert next_run % 30 == 0  # :00 or :30 of a minute
    assert 0 < next_run - ts(body["createdAt"]) <= 30
    got = await client.get("/api/v1/schedules/sums")
    assert got.status_code == 200
    assert got.json() == body


async def test_action_is_accepted_for_type_and_ids_are_generated(
    client: httpx.AsyncClient,
) -> None:
    body = await create(client, action="add", parameters=[1, 2], interval=60)
    assert body["type"] == "add"
    assert body["interval"] == 60.0
    assert body["parameters"] == {"a": 1, "b": 2}  # stored by name, like jobs
    assert len(body["id"]) == 36
    assert ts(body["nextRunAt"]) == pytest.approx(ts(body["createdAt"]) + 60, abs=0.002)


@pytest.mark.parametrize(
    ("body", "code", "field"),
    [
        ({"type": "add", "parameters": {"a": 1, "b": 2}}, "VALIDATION_ERROR", "cron"),
        (
            {"type": "add", "parameters": {"a": 1, "b": 2}, "cron": "* * * * *", "interval": 5},
            "VALIDATION_ERROR",
            "cron",
        ),
        ({"type": "add", "parameters": {"a": 1, "b": 2}, "cron": "61 * * * *"}, None, "cron"),
        (
            {"type": "add", "parameters": {"a": 1, "b": 2}, "cron": "* * * * *", "timezone": "X/Y"},
            "VALIDATION_ERROR",
            "timezone",
        ),
        ({"type": "nope", "cron": "* * * * *"}, "UNKNOWN_TASK", "type"),
        ({"cron": "* * * * *"}, "VALIDATION_ERROR", "type"),
        ({"type": "add", "parameters": {"a": 1}, "cron": "* * * * *"}, None, "parameters"),
        (
            {"type": "add", "parameters": {"a": "1", "b": 2}, "cron": "* * * * *"},
            None,
            "parameters",
        ),
        ({"type": "add", "action": "anything", "cron": "* * * * *"}, None, "action"),
        ({"type": "add", "parameters": {"a": 1, "b": 2}, "interval": 0.01}, None, "interval"),
        ({"type": "add", "parameters": {"a": 1, "b": 2}, "interval": "5"}, None, "interval"),
        (
            {"type": "add", "parameters": {"a": 1, "b": 2}, "interval": 5, "jitter": -1},
            None,
            "jitter",
        ),
        ({"id": "a b", "type": "add", "interval": 5}, None, "id"),
        ({"type": "add", "interval": 5, "misfirePolicy": "later"}, None, "misfirePolicy"),
        ({"type": "add", "interval": 5, "surprise": 1}, None, "surprise"),
    ],
)
async def test_invalid_schedules_get_422_naming_the_field(
    client: httpx.AsyncClient, body: dict[str, Any], code: str | None, field: str
) -> None:
    response = await client.post("/api/v1/schedules", json=body)
    error = assert_error(response, 422, code)
    assert error["details"]["field"] == field, error


async def test_malformed_bodies(client: httpx.AsyncClient) -> None:
    response = await client.post(
        "/api/v1/schedules", content=b"{", headers={"content-type": "application/json"}
    )
    assert_error(response, 422, "VALIDATION_ERROR")
    assert_error(await client.post("/api/v1/schedules", json=[1]), 422, "VALIDATION_ERROR")
    response = await client.post(
        "/api/v1/schedules", content=b"x", headers={"content-type": "text/plain"}
    )
    assert_error(response, 415)


async def test_duplicate_id_is_a_conflict(client: httpx.AsyncClient) -> None:
    await create(client, id="dup", type="anything", parameters={"x": 1}, interval=5)
    response = await client.post(
        "/api/v1/schedules",
        json={"id": "dup", "type": "anything", "parameters": [1], "interval": 5},
    )
    assert_error(response, 409, "CONFLICT")


async def test_list_pages_by_id(client: httpx.AsyncClient) -> None:
    for name in ("c", "a", "b"):
        await create(client, id=name, type="anything", parameters={"x": 1}, interval=5)
    first = (await client.get("/api/v1/schedules?limit=2")).json()
    assert [s["id"] for s in first["items"]] == ["a", "b"]
    assert first["nextCursor"] == "b"
    second = (await client.get(f"/api/v1/schedules?limit=2&cursor={first['nextCursor']}")).json()
    assert [s["id"] for s in second["items"]] == ["c"]
    assert second["nextCursor"] is None


async def test_patch_changes_only_named_fields_and_keeps_the_plan(
    client: httpx.AsyncClient,
) -> None:
    created = await create(client, id="p", type="anything", parameters={"x": 1}, interval=60)
    response = await client.patch("/api/v1/schedules/p", json={"parameters": {"x": 2}})
    assert response.status_code == 200, response.text
    patched = response.json()
    assert patched["parameters"] == {"x": 2}
    assert patched["nextRunAt"] == created["nextRunAt"]  # same timing: same next run
    paused = (await client.patch("/api/v1/schedules/p", json={"enabled": False})).json()
    assert paused["enabled"] is False
    assert paused["nextRunAt"] is None
    switched = (await client.patch("/api/v1/schedules/p", json={"cron": "@hourly"})).json()
    assert switched["cron"] == "@hourly"
    assert switched["interval"] is None  # naming cron replaced the interval
    retimed = (
        await client.patch("/api/v1/schedules/p", json={"enabled": True, "timezone": "Asia/Tokyo"})
    ).json()
    assert ts(retimed["nextRunAt"]) % 3600 == 0
    bad = await client.patch("/api/v1/schedules/p", json={"timezone": "Nowhere"})
    assert assert_error(bad, 422)["details"]["field"] == "timezone"


async def test_put_replaces_the_definition(client: httpx.AsyncClient) -> None:
    await create(client, id="r", type="anything", parameters={"x": 1}, interval=60, jitter=2)
    response = await client.put(
        "/api/v1/schedules/r", json={"type": "add", "parameters": [1, 2], "cron": "* * * * *"}
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["type"], body["cron"], body["interval"], body["jitter"]) == (
        "add",
        "* * * * *",
        None,
        0.0,
    )
    mismatch = await client.put(
        "/api/v1/schedules/r", json={"id": "other", "type": "add", "cron": "* * * * *"}
    )
    assert assert_error(mismatch, 422)["details"]["field"] == "id"


async def test_missing_schedules_are_404(client: httpx.AsyncClient) -> None:
    for method, path in [
        ("GET", "/api/v1/schedules/none"),
        ("DELETE", "/api/v1/schedules/none"),
        ("POST", "/api/v1/schedules/none/trigger"),
        ("GET", "/api/v1/schedules/%20bad%20id"),
    ]:
        assert_error(await client.request(method, path), 404, "NOT_FOUND")
    for method in ("PUT", "PATCH"):
        response = await client.request(method, "/api/v1/schedules/none", json={"enabled": True})
        assert_error(response, 404, "NOT_FOUND")


async def test_delete_answers_204(client: httpx.AsyncClient) -> None:
    await create(client, id="d", type="anything", parameters={"x": 1}, interval=5)
    response = await client.delete("/api/v1/schedules/d")
    assert response.status_code == 204
    assert response.content == b""
    assert_error(await client.get("/api/v1/schedules/d"), 404)


async def test_trigger_enqueues_now_and_records_the_job(client: httpx.AsyncClient) -> None:
    await create(client, id="t", type="add", parameters={"a": 1, "b": 2}, interval=3600)
    response = await client.post("/api/v1/schedules/t/trigger")
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["type"] == "add"
    assert job["status"] == "pending"
    assert job["parameters"] == {"a": 1, "b": 2}
    assert response.headers["location"] == f"/api/v1/jobs/{job['jobId']}"
    schedule = (await client.get("/api/v1/schedules/t")).json()
    assert schedule["lastJobId"] == job["jobId"]
    assert schedule["lastRunAt"] is not None


async def test_code_schedules_can_be_paused_not_edited(
    conveyor: Conveyor, client: httpx.AsyncClient
) -> None:
    @conveyor.cron("0 * * * *", name="hourly")
    async def hourly() -> None: ...

    from conveyor.scheduling.declare import upsert_declared

    await upsert_declared(conveyor, await conveyor.backend())
    body = (await client.get("/api/v1/schedules/hourly")).json()
    assert body["source"] == "code"
    edit = await client.patch("/api/v1/schedules/hourly", json={"cron": "* * * * *"})
    assert_error(edit, 409, "CONFLICT")
    paused = await client.patch("/api/v1/schedules/hourly", json={"enabled": False})
    assert paused.status_code == 200
    assert paused.json()["enabled"] is False


async def test_scheduler_fires_api_schedules_with_fire_keys(
    conveyor: Conveyor, client: httpx.AsyncClient
) -> None:
    from conveyor.scheduling.scheduler import Scheduler

    created = await create(client, id="k", type="add", parameters={"a": 1, "b": 1}, interval=5)
    backend = await conveyor.backend()
    sched = Scheduler(conveyor)
    assert await sched.acquire()
    await sched.reload(backend)
    stored = await backend.get_schedule("k")
    assert stored is not None
    assert stored.next_run_at is not None
    due = stored.next_run_at  # the API shows it to the millisecond; keys round it
    assert ts(created["nextRunAt"]) == pytest.approx(due, abs=0.001)
    assert await sched.fire_due(due + 0.001) == 1
    shown = (await client.get("/api/v1/schedules/k")).json()
    job = (await client.get(f"/api/v1/jobs/{shown['lastJobId']}")).json()
    assert job["idempotencyKey"] == fire_key("k", due)
    assert ts(shown["nextRunAt"]) == pytest.approx(due + 5, abs=0.002)


async def test_openapi_documents_the_routes(client: httpx.AsyncClient) -> None:
    spec = (await client.get("/openapi.json")).json()
    paths = spec["paths"]
    assert set(paths["/api/v1/schedules"]) == {"get", "post"}
    assert set(paths["/api/v1/schedules/{schedule_id}"]) == {"get", "put", "patch", "delete"}
    assert "post" in paths["/api/v1/schedules/{schedule_id}/trigger"]
    assert "nextRunAt" in spec["components"]["schemas"]["ScheduleOut"]["properties"]
