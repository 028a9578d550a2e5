"""Conveyor: an asyncio-native distributed task queue and scheduler with an HTTP job API."""

from conveyor import errors
from conveyor.app import Conveyor
from conveyor.context import current_job
from conveyor.job import Job, JobHandle, JobStatus
from conveyor.settings import Settings
from conveyor.task import Task

__all__ = [
    "Conveyor",
    "Job",
    "JobHandle",
    "JobStatus",
    "Settings",
    "Task",
    "current_job",
    "errors",
]

__version__ = "0.1.0"
