"""Job records and their ids."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from conveyor.job import Job, JobStatus, new_job_id


def test_job_ids_are_unique_uuid7_in_creation_order() -> None:
    ids = [new_job_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_job_copy_matches_dataclasses_replace_field_for_field() -> None:
    values = {
        f.name: f"value of {f.name}" if f.name != "status" else JobStatus.RUNNING
        for f in dataclasses.fields(Job)
    }
    job = Job(**values)
    copied = job.copy(attempts=3, status=JobStatus.PENDING)
    assert copied == dataclasses.replace(job, attempts=3, status=JobStatus.PENDING)
    assert copied is not job
    assert job.attempts == "value of attempts"  # the original is untouched
    assert job.copy() == job
    with pytest.raises(AttributeError):
        job.copy(no_such_field=1)
