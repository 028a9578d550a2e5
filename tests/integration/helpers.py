"""What the integration tests share."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable


async def until(check: Callable[[], Awaitable[bool]], what: str, timeout: float = 10.0) -> float:
    """Poll ``check`` until it holds (for state that has no event to await); return the
    seconds it took.

    Raises:
        AssertionError: it still did not hold after ``timeout`` seconds.
    """
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(0.05)
    return time.monotonic() - started
