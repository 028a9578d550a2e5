"""A failure that repeats (the store is down, the disk is full): said once when it
starts, then at most every ``every`` seconds with a count, and once when it ends.

A loop that retries every 200 ms would otherwise write five lines a second for as long
as the outage lasts, burying everything else in the log.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Seconds between two warnings about one ongoing failure.
WARN_EVERY = 30.0


class Outage:
    """The state of one repeatedly failing operation, and what to log about it.

    Args:
        logger: where to log.
        what: the operation, as a log message names it ("fetch", "storing outcomes").
        every: the least seconds between two warnings while it keeps failing.
        clock: monotonic seconds.
    """

    def __init__(
        self,
        logger: logging.Logger,
        what: str,
        *,
        every: float = WARN_EVERY,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.logger = logger
        self.what = what
        self.every = every
        self._clock = clock
        self.since: float | None = None
        self.failures = 0  # in this outage
        self._warned_at = 0.0
        self._unsaid = 0  # failures since the last warning

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    def failed(self, exc: object, retry_in: float | None = None) -> None:
        """Count one failure; warn if it starts an outage or the last warning is old."""
        now = self._clock()
        self.failures += 1
        self._unsaid += 1
        retry = "" if retry_in is None else f"; retrying in {retry_in:.2f}s"
        if self.since is None:
            self.since = self._warned_at = now
            self._unsaid = 0
            self.logger.warning("%s failed (%s)%s", self.what, exc, retry)
        elif now - self._warned_at >= self.every:
            self.logger.warning(
                "%s still failing after %.0fs (%d failures since the last report; last: %s)%s",
                self.what,
                now - self.since,
                self._unsaid,
                exc,
                retry,
            )
            self._warned_at = now
            self._unsaid = 0

    def succeeded(self) -> None:
        """Say that the operation works again, if it was failing."""
        if self.since is None:
            return
        self.logger.warning(
            "%s works again after %.1fs and %d failures",
            self.what,
            self._clock() - self.since,
            self.failures,
        )
        self.since = None
        self.failures = self._unsaid = 0
