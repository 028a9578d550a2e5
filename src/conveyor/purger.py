"""Retention: the background service that deletes what the store no longer keeps.

Every long-lived process (``conveyor run``, ``api``, ``worker``, ``scheduler``) runs one,
so finished jobs and old events go whichever processes are up, judged by the settings
the store was opened with (``CONVEYOR_RESULT_TTL_SECONDS``,
``CONVEYOR_EVENT_RETENTION_SECONDS``). Purging is idempotent: several processes purging
the same store only repeat each other's work.
"""

from __future__ import annotations

import asyncio
import logging

from conveyor._aio import first_of
from conveyor.app import Conveyor
from conveyor.errors import ConveyorError

logger = logging.getLogger(__name__)

#: The longest pause between purges.
MAX_INTERVAL = 60.0
#: The shortest pause between purges (for retentions of a few seconds).
MIN_INTERVAL = 0.25


def purge_interval(result_ttl: float, event_retention: float) -> float:
    """Seconds between purges: a quarter of the shorter retention, within bounds, so a
    record outlives its retention by at most a quarter of it (or a minute)."""
    return min(MAX_INTERVAL, max(MIN_INTERVAL, min(result_ttl, event_retention) / 4))


class Purger:
    """Purges the app's store at start and then every :func:`purge_interval` seconds.

    Args:
        app: whose store to purge; its settings give the retention.
    """

    def __init__(self, app: Conveyor) -> None:
        self.app = app
        settings = app.settings
        self.interval = purge_interval(
            settings.result_ttl_seconds, settings.event_retention_seconds
        )
        self._stop = asyncio.Event()

    def stop(self) -> None:
        """Ask :meth:`run` to return."""
        self._stop.set()

    async def run(self) -> None:
        """Purge until :meth:`stop`; store errors are logged, never raised."""
        backend = await self.app.backend()
        while not self._stop.is_set():
            try:
                removed = await backend.purge()
            except (ConveyorError, OSError) as exc:
                logger.warning("purging expired jobs failed: %s", exc)
            else:
                if removed:
                    logger.info("purged %d expired jobs", removed)
            await first_of(asyncio.sleep(self.interval), self._stop.wait())
