"""Small asyncio helpers shared by the long-running services."""

from __future__ import annotations

import asyncio
from typing import Any


async def first_of(*aws: Any) -> None:
    """Wait until the first of ``aws`` is done.

    Awaitables made into tasks here are cancelled afterwards; futures and tasks passed in
    belong to the caller and are left running.
    """
    tasks = [a if isinstance(a, asyncio.Future) else asyncio.ensure_future(a) for a in aws]
    owned = [t for t, a in zip(tasks, aws, strict=True) if not isinstance(a, asyncio.Future)]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in owned:
            task.cancel()
