"""Workers: fetch jobs in batches, run them (event loop, threads, processes), report outcomes."""

from conveyor.worker.worker import Worker, WorkerStats

__all__ = ["Worker", "WorkerStats"]
