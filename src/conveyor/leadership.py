"""A leader lease: one holder at a time of a named lock in the store.

The scheduler (lock ``scheduler``) and the webhook deliverer (lock ``webhooks``) each
run as any number of replicas of which one leads. A replica takes the lock, and its
holder renews it, every ``ttl / 3`` seconds. The holder trusts its lock only until
``t_request_sent + ttl - ttl / 10`` on its monotonic clock, however the renewals fare:
past that the store may have let the lock expire and handed it to another replica, so a
holder that was paused or cut off from the store stops acting before another one starts.
Each acquisition of a lock comes with a fencing token that grows with every new holder.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Callable

from conveyor._outage import Outage
from conveyor.backends.base import Backend
from conveyor.errors import ConveyorError, LostLeadershipError

logger = logging.getLogger(__name__)


def replica_id() -> str:
    """This process's name in leader locks: ``host:pid:random``."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderLease:
    """A replica's hold on the leader lock ``name``.

    Args:
        name: the lock, and the name this lease logs under.
        ttl: seconds the store keeps the lock without a renewal.
        owner: this replica's name in the lock (default :func:`replica_id`).
        clock: monotonic seconds.
    """

    def __init__(
        self,
        name: str,
        ttl: float,
        *,
        owner: str | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        self.ttl = ttl
        self.owner = owner or replica_id()
        self._clock = clock
        #: The fencing token of the current hold; None while not leading.
        self.token: int | None = None
        #: How many times this replica became the leader.
        self.terms = 0
        self._until = 0.0
        self._outage = Outage(logger, f"{name}: the leader lock")

    def __repr__(self) -> str:
        return f"<LeaderLease {self.name} {self.owner} held={self.held}>"

    @property
    def held(self) -> bool:
        """True while this replica holds the lock and may act as the leader."""
        return self._clock() < self._until

    def check(self) -> None:
        """Raise :class:`LostLeadershipError` unless the lock is still held."""
        if not self.held:
            raise LostLeadershipError(f"{self.owner} no longer holds the {self.name} lock")

    async def acquire(self, backend: Backend) -> bool:
        """Take or renew the lock once; return whether this replica leads.

        Raises:
            BackendError: the store failed (trust in a held lock runs out on its own).
        """
        sent = self._clock()
        token = await backend.acquire_lock(self.name, self.owner, self.ttl)
        if token is None:
            if self.token is not None:
                logger.warning("%s: %s lost the leader lock", self.name, self.owner)
            self._until, self.token = 0.0, None
            return False
        self._until = sent + self.ttl - self.ttl / 10
        if token != self.token:
            self.token = token
            self.terms += 1
            logger.info("%s: %s leads (token %d)", self.name, self.owner, token)
        return True

    async def try_acquire(self, backend: Backend) -> bool:
        """:meth:`acquire`, with a store error logged (once per outage) instead of raised."""
        try:
            held = await self.acquire(backend)
        except ConveyorError as exc:
            self._outage.failed(exc)
            return self.held
        self._outage.succeeded()
        return held

    def pause(self) -> float:
        """Seconds until the next try: a third of the ttl, jittered while standing by
        so that replicas do not contend in lockstep."""
        step = self.ttl / 3
        return step if self.held else step * random.uniform(0.8, 1.2)

    async def keep(self, backend: Backend) -> None:
        """Renew the held lock until it is lost, then raise :class:`LostLeadershipError`.

        Run it beside the leader's work, in one task group: the work ends with it.
        """
        while True:
            await asyncio.sleep(self.pause())
            await self.try_acquire(backend)
            self.check()

    async def release(self, backend: Backend) -> None:
        """Let another replica lead at once (a no-op unless held); store errors pass."""
        self._until, self.token = 0.0, None
        try:
            await backend.release_lock(self.name, self.owner)
        except ConveyorError as exc:
            logger.debug("%s: releasing the leader lock failed: %s", self.name, exc)
