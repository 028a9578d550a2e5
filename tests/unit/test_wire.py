"""The JSON of records, one codec for the API, the event stream, the WebSocket and
webhooks; the OpenAPI models are checked against what it writes."""

from __future__ import annotations

from typing import Any

import pydantic
import pytest

from conveyor.api.schemas import JobOut, SubmittedJob
from conveyor.job import Job, JobStatus, task_error
from conveyor.wire import (
    format_instant,
    parse_instant,
    render_accepted,
    render_job,
    render_parameters,
)

T = 1_900_000_000.123


def jobs_in_every_form() -> list[Job]:
    base = Job(id="j1", type="t", kwargs={"a": 1}, created_at=T, run_at=T)
    return [
        base,
        base.copy(status=JobStatus.RUNNING, attempts=1, started_at=T, timeout=30.0),
        base.copy(status=JobStatus.COMPLETED, result={"ok": True}, completed_at=T, progress=100),
        base.copy(status=JobStatus.COMPLETED, omitted_result_bytes=10_000, completed_at=T),
        base.copy(
            status=JobStatus.FAILED,
            error=task_error("boom", reason="exception", retryable=False),
            completed_at=T,
        ),
        base.copy(args=[1, 2], kwargs={}, idempotency_key="k", callback_url="https://x.io/h"),
        base.copy(args=[1], kwargs={"b": 2}, callback_secret="s3cret"),
        base.copy(webhook={"id": "msg_1", "state": "delivered", "attempts": 1}),
    ]


class StrictJobOut(JobOut):
    model_config = pydantic.ConfigDict(extra="forbid")


def test_every_rendered_job_fits_the_documented_model_and_uses_all_of_it() -> None:
    seen: set[str] = set()
    for job in jobs_in_every_form():
        rendered = render_job(job)
        StrictJobOut.model_validate(rendered)  # no key the model does not document
        seen |= set(rendered)
        assert "callbackSecret" not in rendered
        assert "s3cret" not in str(rendered)
    documented = {field.alias or name for name, field in JobOut.model_fields.items()}
    assert seen == documented  # and nothing documented that is never written


def test_the_answer_to_a_submission_fits_its_model() -> None:
    job = Job(id="j1", type="t", created_at=T, run_at=T)
    rendered = render_accepted(job)
    assert rendered == {"jobId": "j1", "status": "pending", "createdAt": "2030-03-17T17:46:40.123Z"}
    documented = {field.alias or name for name, field in SubmittedJob.model_fields.items()}
    assert set(rendered) == documented
    SubmittedJob.model_validate(rendered)


def test_instants_round_trip_and_stay_in_range() -> None:
    assert format_instant(T) == "2030-03-17T17:46:40.123Z"
    assert parse_instant(format_instant(T)) == pytest.approx(T, abs=0.001)
    assert parse_instant("2030-03-17T18:46:40.123+01:00") == pytest.approx(T, abs=0.001)
    assert format_instant(1e20).startswith("9999-12-31")  # clamped, never an error
    assert format_instant(-1e20).startswith("0001-01-01")
    for bad in ("2030-03-17", "2030-03-17T17:46:40", "1969-12-31T23:59:59Z", "yesterday"):
        with pytest.raises(ValueError, match="instant"):
            parse_instant(bad)


@pytest.mark.parametrize(
    ("args", "kwargs", "shown"),
    [([], {}, {}), ([1, 2], {}, [1, 2]), ([], {"a": 1}, {"a": 1}), ([1], {"a": 1}, {"a": 1})],
)
def test_parameters_are_shown_as_submitted(
    args: list[Any], kwargs: dict[str, Any], shown: Any
) -> None:
    assert render_parameters(args, kwargs) == shown
