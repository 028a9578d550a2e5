"""Small builders shared by the contract tests."""

from __future__ import annotations

from typing import Any

from conveyor.backends.base import Backend, Outcome, OutcomeKind
from conveyor.job import Job, new_job_id


def make_job(type: str = "task", **fields: Any) -> Job:
    """A new pending job; ``created_at``/``run_at`` left to the store unless given."""
    return Job(id=new_job_id(), type=type, **fields)


async def enqueue(backend: Backend, *jobs: Job, ttl: float = 3600.0) -> list[Job]:
    """Enqueue ``jobs`` in one batch and return the stored records."""
    return [r.job for r in await backend.enqueue(list(jobs), idempotency_ttl=ttl)]


def done(job: Job, worker: str, result: Any = None) -> Outcome:
    """A COMPLETED outcome for the attempt ``job`` (as fetched) is on."""
    return Outcome(job.id, worker, job.attempts, OutcomeKind.COMPLETED, result=result)
