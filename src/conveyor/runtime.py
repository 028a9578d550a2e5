"""Running Conveyor as a process: API server, worker, or both, with signal handling.

The first SIGTERM or Ctrl-C stops taking new work and drains running jobs within the
shutdown grace period; a second Ctrl-C stops at once (running jobs are returned to their
queue as the worker exits, or handed out again when their lease expires).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import ipaddress
import logging
import signal
from collections.abc import Callable, Coroutine, Generator, Sequence
from typing import Any

from conveyor.app import Conveyor
from conveyor.errors import ConfigurationError
from conveyor.purger import Purger
from conveyor.scheduling.scheduler import Scheduler
from conveyor.webhooks import WebhookDeliverer
from conveyor.worker import Worker

logger = logging.getLogger(__name__)


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
    # An API process pushes the queue options declared in code and runs the webhook
    # deliverer (which delivers only while it holds the `webhooks` lock).
    deliverer = WebhookDeliverer(app) if api else None
    purger = Purger(app)
    if api:
        await app.configure_queues()
    signals_seen = 0

    def on_signal(sig: signal.Signals) -> None:
        nonlocal signals_seen
        signals_seen += 1
        if signals_seen == 1:
            logger.warning("%s received: draining (press Ctrl-C again to stop at once)", sig.name)
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
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
    finally:
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        await app.aclose()
