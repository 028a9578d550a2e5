"""Log records as text for people or as one JSON object a line for log pipelines.

Only the command line configures logging (:func:`configure_logging`); library code logs
through ``logging.getLogger(__name__)`` with %-style arguments. A record made while a
task runs carries its job (id, task, queue, attempt, worker) without the caller passing
it: the formatter reads the running job's context. Code outside a task passes the same
fields with ``extra=job_fields(job)``.
"""

from __future__ import annotations

import logging
import sys
import time
from typing import Any, Literal

import orjson

from conveyor.context import running_job
from conveyor.job import Job

LogFormat = Literal["text", "json"]
LOG_FORMATS: tuple[LogFormat, ...] = ("text", "json")

#: Record attributes that name a job, in the order a JSON line shows them.
JOB_FIELDS = ("jobId", "task", "queue", "attempt", "workerId", "traceId")

TEXT_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"

# Attributes every LogRecord has; anything else on a record came through `extra=`.
_STANDARD = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
    "taskName",
}


def job_fields(job: Job) -> dict[str, Any]:
    """The ``extra=`` of a record about ``job``, made outside its task."""
    fields: dict[str, Any] = {
        "jobId": job.id,
        "task": job.type,
        "queue": job.queue,
        "attempt": job.attempts,
    }
    if job.lease_owner:
        fields["workerId"] = job.lease_owner
    return fields


class JSONFormatter(logging.Formatter):
    """One JSON object a line: ``time`` (RFC 3339, UTC, ms), ``level``, ``logger``,
    ``message``, the job fields where they apply, other ``extra=`` fields, and
    ``exception`` (the formatted traceback) when there is one."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        millis = int((record.created - seconds) * 1000)
        out: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}Z",
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = running_job()
        if job is not None:
            out.update(job_fields(job))
        for key, value in vars(record).items():
            if key not in _STANDARD:
                out[key] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        elif record.stack_info:
            out["stack"] = self.formatStack(record.stack_info)
        return orjson.dumps(out, default=str).decode()


def configure_logging(level: str = "info", fmt: LogFormat = "text") -> None:
    """Send records at ``level`` and above to standard error, as text or JSON lines.

    Replaces handlers configured earlier (a second call changes the format).
    """
    handler = logging.StreamHandler(sys.stderr)
    if fmt == "json":
        handler.setFormatter(JSONFormatter())
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
