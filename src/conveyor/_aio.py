"""Small asyncio helpers shared by the long-running services."""

from __future__ import annotations

import asyncio
from typing import Any


async def first_of(*aws: Any) -> None:
    """Wait until the first of ``aws`` is done.

    Awaitables made into tasks here are cancelled afterwards, and when one of them ended
    in an exception, that exception is raised here; futures and tasks passed in belong to
    the caller and are left running, their outcome for the caller to read.
    """
    tasks = [a if isinstance(a, asyncio.Future) else asyncio.ensure_future(a) for a in aws]
    owned = [t for t, a in zip(tasks, aws, strict=True) if not isinstance(a, asyncio.Future)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in owned:
            task.cancel()
    for task in owned:
        # cancel() above marks a failed task's exception as seen: raise it, or it is lost.
        if task.done() and not task.cancelled() and (exc := task.exception()) is not None:
            raise exc
