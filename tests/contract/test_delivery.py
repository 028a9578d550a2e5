"""The delivery log: webhook state on the job, and named cursors."""

from __future__ import annotations

import pytest

from conveyor.backends.base import Backend
from tests.contract.helpers import done, enqueue, make_job

pytestmark = pytest.mark.timeout(30)


async def test_webhook_state_is_stored_on_the_job(backend: Backend) -> None:
    (job,) = await enqueue(
        backend, make_job(callback_url="https://example.com/hook", callback_secret="s3cret")
    )
    assert job.webhook is None
    state = {"state": "pending", "attempts": 1, "lastStatus": 500, "lastError": "HTTP 500"}
    await backend.record_webhook(job.id, state)
    stored = await backend.get_job(job.id)
    assert stored is not None
    assert stored.webhook == state
    assert stored.callback_secret == "s3cret"
    assert stored.callback_url == "https://example.com/hook"
    # Later transitions keep it; a new state replaces it.
    (leased,) = await backend.fetch(["default"], "w", 1, 30)
    assert leased.webhook == state
    await backend.complete([done(leased, "w", result=3)])
    finished = await backend.get_job(job.id)
    assert finished is not None
    assert finished.webhook == state
    assert finished.result == 3
    await backend.record_webhook(job.id, {"state": "delivered", "attempts": 2})
    again = await backend.get_job(job.id)
    assert again is not None
    assert again.webhook == {"state": "delivered", "attempts": 2}


async def test_recording_for_a_missing_job_creates_nothing(backend: Backend) -> None:
    await backend.record_webhook("0190aaaa-0000-7000-8000-000000000000", {"state": "failed"})
    assert await backend.get_job("0190aaaa-0000-7000-8000-000000000000") is None


async def test_cursors_by_name(backend: Backend, make_backend: object) -> None:
    assert await backend.get_cursor("webhooks") is None
    await backend.set_cursor("webhooks", "00000000000000000042")
    await backend.set_cursor("other", "7")
    other: Backend = make_backend()  # type: ignore[operator]
    await other.open()
    try:
        assert await other.get_cursor("webhooks") == "00000000000000000042"
        await other.set_cursor("webhooks", "00000000000000000043")
    finally:
        await other.aclose()
    assert await backend.get_cursor("webhooks") == "00000000000000000043"
    assert await backend.get_cursor("other") == "7"
