"""Lease renewal from a thread of its own.

The heartbeat runs on its own event loop in its own thread, so a task that blocks the
worker's event loop (CPU work in an ``async def``) cannot starve it: leases stay renewed
and the job is not handed to a second worker while the first still runs it. What such a
task does starve is everything else on the loop; the worker logs loop stalls.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping

from conveyor._outage import Outage
from conveyor.app import Conveyor
from conveyor.backends.base import Backend, WorkerInfo
from conveyor.errors import ConveyorError

logger = logging.getLogger(__name__)


class Heartbeat:
    """Renews the leases of running jobs every ``interval`` seconds.

    Args:
        app: the application (the thread opens its own store connection).
        worker_id: whose leases to renew.
        lease_seconds: the new lease length on each renewal.
        interval: seconds between renewals.
        snapshot: returns ``{job_id: attempt}`` of running jobs; called from the thread.
        on_lost: called on the worker's loop with ``{job_id: attempt}`` of the attempts
            the worker must stop (those renewed, not whatever runs by the time it hears).
        announce: returns the worker's registration; when given, each beat also refreshes
            it in the store's worker registry, with a ttl of ``registry_beats`` beats.
        registry_beats: beats without a refresh after which the worker is taken for dead.
    """

    def __init__(
        self,
        app: Conveyor,
        *,
        worker_id: str,
        lease_seconds: float,
        interval: float,
        snapshot: Callable[[], Mapping[str, int]],
        on_lost: Callable[[dict[str, int]], None],
        announce: Callable[[], WorkerInfo] | None = None,
        registry_beats: float = 3.0,
    ) -> None:
        self._app = app
        self._worker_id = worker_id
        self._lease = lease_seconds
        self._interval = interval
        self._snapshot = snapshot
        self._on_lost = on_lost
        self._announce = announce
        self.registry_ttl = interval * registry_beats
        self._stop = threading.Event()
        self._renewing = Outage(logger, "lease renewal")
        self._registering = Outage(logger, "worker registration")
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.beats = 0

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._thread = threading.Thread(target=self._run, name="conveyor-heartbeat", daemon=True)
        self._thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        """Stop renewing; wait up to ``timeout`` seconds for the thread to end.

        A thread still waiting on the store by then is left to end on its own (it is a
        daemon: it does not hold the process).
        """
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
            if self._thread.is_alive():
                logger.warning("heartbeat thread still waiting on the store; leaving it")
            self._thread = None

    def _run(self) -> None:
        asyncio.run(self._main())

    async def _main(self) -> None:
        backend = await self._app.backend()
        try:
            while not self._stop.wait(self._interval):
                await self.beat(backend)
                await self.register(backend)
        finally:
            await self._app.release_backend()

    async def register(self, backend: Backend) -> None:
        """Refresh the worker's entry in the registry (a no-op without ``announce``)."""
        if self._announce is None or self._stop.is_set():
            return
        try:
            await backend.register_worker(self._announce(), self.registry_ttl)
        except (ConveyorError, OSError) as exc:
            self._registering.failed(exc)
            return
        self._registering.succeeded()

    async def beat(self, backend: Backend) -> None:
        """Renew once; report lost leases to the worker."""
        leases = dict(self._snapshot())
        if not leases:
            return
        try:
            lost = await backend.renew(self._worker_id, leases, self._lease)
        except (ConveyorError, OSError) as exc:
            self._renewing.failed(exc)
            return
        self._renewing.succeeded()
        self.beats += 1
        if lost and self._loop is not None:
            attempts = {job_id: leases[job_id] for job_id in lost if job_id in leases}
            self._loop.call_soon_threadsafe(self._on_lost, attempts)
