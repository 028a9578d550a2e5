"""Running Conveyor as a process: API server, worker, or both, with signal handling.

The first SIGTERM or Ctrl-C stops taking new work and drains running jobs within the
shutdown grace period; a second Ctrl-C stops at once (running jobs are returned to their
queue as the worker exits, or handed out again when their lease expires). Either way the
process ends soon after the grace period, even with the store down: parts still waiting
on it then are cancelled.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
import time
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any

from conveyor._aio import first_of
from conveyor.app import Conveyor
from conveyor.errors import ConfigurationError
from conveyor.purger import Purger
from conveyor.scheduling.scheduler import Scheduler
from conveyor.webhooks import WebhookDeliverer
from conveyor.worker import Worker
from conveyor.worker.worker import SHUTDOWN_SLACK

logger = logging.getLogger(__name__)

#: Seconds past a worker's own bound (grace + SHUTDOWN_SLACK) after which the parts of a
#: stopping process still busy (a scheduler waiting on a frozen store, say) are cancelled.
EXIT_MARGIN = 1.0
#: Seconds a stopped process waits for its store connections to close.
CLOSE_SECONDS = 1.0


def run_async(main: Callable[[], Coroutine[Any, Any, None]]) -> None:
    """Run ``main`` on uvloop where available, else the default asyncio loop."""
    try:
        import uvloop
    except ImportError:
        asyncio.run(main())
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` reaches this machine only: ``localhost`` or a loopback
    address. Any other name counts as reachable from outside (it is not resolved)."""
    if host.lower() == "localhost":
        return True
    try:
        address = ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    mapped = getattr(address, "ipv4_mapped", None)  # ::ffff:127.0.0.1
    return address.is_loopback or (mapped is not None and mapped.is_loopback)


def check_exposure(app: Conveyor, host: str) -> None:
    """Refuse to serve the API without auth on an address other machines can reach.

    Raises:
        ConfigurationError: ``host`` is not loopback, no ``CONVEYOR_API_TOKENS`` are
            set and ``CONVEYOR_ALLOW_INSECURE_NO_AUTH`` is off; one line naming both.
    """
    settings = app.settings
    if settings.api_tokens or settings.allow_insecure_no_auth or is_loopback(host):
        return
    raise ConfigurationError(
        f"refusing to serve the API on {host} without auth: set CONVEYOR_API_TOKENS, "
        "bind a loopback address, or allow it with --insecure-no-auth "
        "(CONVEYOR_ALLOW_INSECURE_NO_AUTH=1)"
    )


async def _until_done(
    tasks: Sequence[asyncio.Task[None]], stop_requested: asyncio.Event, budget: float
) -> None:
    """Wait for every part, or the first error of one (raised); once a stop is requested,
    wait at most ``budget`` seconds (what still runs then is for :func:`_stop_parts`)."""
    gathered = asyncio.gather(*tasks)
    await first_of(gathered, stop_requested.wait())
    if not gathered.done():
        await asyncio.wait({gathered}, timeout=budget)
    if gathered.done():
        await gathered
        return
    logger.warning("still stopping %.0fs after the signal; stopping at once", budget)
    # Read whatever it ends with, so asyncio does not report it as never retrieved.
    gathered.add_done_callback(lambda done: done.cancelled() or done.exception())


async def _stop_parts(tasks: Sequence[asyncio.Task[None]], until: float) -> None:
    """Cancel the parts still running and give their cleanup until ``until``
    (``time.monotonic()``); then cancel again, for up to EXIT_MARGIN seconds, those whose
    cleanup waits on the store too."""
    pending = {task for task in tasks if not task.done()}
    for task in pending:
        task.cancel()
    if pending:
        _, pending = await asyncio.wait(pending, timeout=max(until - time.monotonic(), 0.0))
    end = time.monotonic() + EXIT_MARGIN
    while pending and time.monotonic() < end:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=0.1)
    if pending:
        logger.warning("%d parts did not stop; leaving them", len(pending))


def _make_server(app: Conveyor, host: str, port: int) -> Any:
    import uvicorn

    from conveyor.api import create_app

    api = create_app(app, bind_host=host)

    class _Server(uvicorn.Server):
        @contextlib.contextmanager
        def capture_signals(self) -> Generator[None, None, None]:
            yield  # signals are handled by `serve`, which also drains the worker

        async def shutdown(self, sockets: Any = None) -> None:
            # uvicorn waits for open responses before the app's lifespan shutdown runs:
            # end the event streams first, or each open SSE stream holds the exit.
            api.state.event_hub.close()
            await super().shutdown(sockets)

    config = uvicorn.Config(
        api,
        host=host,
        port=port,
        log_level="warning",
        access_log=False,
        lifespan="on",
        timeout_graceful_shutdown=5,
    )
    return _Server(config)


async def serve(
    app: Conveyor,
    *,
    api: bool = True,
    worker: bool = True,
    scheduler: bool = False,
    host: str = "127.0.0.1",
    port: int = 8000,
    queues: Sequence[str] | None = None,
    concurrency: int = 100,
    processes: int | None = None,
    on_ready: Callable[[], None] | None = None,
) -> None:
    """Serve until SIGTERM/SIGINT: the HTTP API, a worker and a scheduler replica, in any
    combination, in one process, with a :class:`~conveyor.purger.Purger` in every case.

    Raises:
        ConfigurationError: the API would listen on a non-loopback ``host`` with no auth
            (see :func:`check_exposure`); nothing has started.
    """
    if api:
        check_exposure(app, host)
    # Fail fast with a clear message when the store cannot be opened.
    backend = await app.backend()
    await backend.ping()
    loop = asyncio.get_running_loop()
    parts: list[Coroutine[Any, Any, None]] = []
    server = _make_server(app, host, port) if api else None
    runner = (
        Worker(app, queues=queues, concurrency=concurrency, processes=processes) if worker else None
    )
    replica = Scheduler(app) if scheduler else None
    stop_requested = asyncio.Event()
    budget = app.settings.shutdown_grace_seconds + SHUTDOWN_SLACK + EXIT_MARGIN
    stop_by: float | None = None  # time.monotonic() by which a stopping process has ended
    # An API process pushes the queue options declared in code and runs the webhook
    # deliverer (which delivers only while it holds the `webhooks` lock).
    deliverer = WebhookDeliverer(app) if api else None
    purger = Purger(app)
    if api:
        await app.configure_queues()
    signals_seen = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals_seen, stop_by
        signals_seen += 1
        if signals_seen == 1:
            logger.warning("%s received: draining (press Ctrl-C again to stop at once)", sig.name)
            stop_requested.set()
            stop_by = time.monotonic() + budget
            if server is not None:
                server.should_exit = True
            if runner is not None:
                runner.stop()
            if replica is not None:
                replica.stop()
            if deliverer is not None:
                deliverer.stop()
            purger.stop()
        else:
            logger.warning("%s received again: stopping now", sig.name)
            if server is not None:
                server.force_exit = True
            if runner is not None:
                runner.stop(force=True)

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    try:
        if server is not None:
            parts.append(server.serve())
        if runner is not None:
            parts.append(runner.run())
        if replica is not None:
            parts.append(replica.run())
        if deliverer is not None:
            parts.append(deliverer.run())
        parts.append(purger.run())
        # Everything built so far (modules, the app, routes, models, tasks) lives as long
        # as the process: keep it out of the collector's full passes, which otherwise
        # stall the event loop for tens of milliseconds every second or so under load
        # (the p99 of a submit went from ~50 ms to ~15 ms).
        gc.collect()
        gc.freeze()
        tasks = [asyncio.create_task(part) for part in parts]
        if on_ready is not None:
            on_ready()
        try:
            await _until_done(tasks, stop_requested, budget)
        finally:
            # After a part's error, the others get the budget a signal would give them.
            await _stop_parts(tasks, stop_by or time.monotonic() + budget)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await app.aclose()
        except TimeoutError:  # a connection waiting on a frozen store: the exit ends it
            logger.warning("store connections did not close within %.0fs", CLOSE_SECONDS)
