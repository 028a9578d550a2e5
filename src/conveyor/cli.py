"""The ``conveyor`` command."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Coroutine
from datetime import UTC, datetime
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from conveyor.app import Conveyor
from conveyor.backends.base import JobFilter
from conveyor.errors import ConveyorError, JobFailedError
from conveyor.job import Job, JobStatus
from conveyor.observability.logs import LOG_FORMATS, LogFormat, configure_logging
from conveyor.serialization import dumps, loads_input
from conveyor.settings import DEFAULT_URL, Settings

F = TypeVar("F", bound=Callable[..., Any])

URL_HELP = f"store URL (default: $CONVEYOR_URL, then {DEFAULT_URL})"


def _friendly(fn: F) -> F:
    """Turn Conveyor errors into a one-line message and exit code 1."""

    @wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ConveyorError as exc:
            raise click.ClickException(str(exc)) from None

    return wrapper  # type: ignore[return-value]


def _load(spec: str, url: str | None) -> Conveyor:
    from conveyor.loader import load_app

    app = load_app(spec)
    if url:
        app.settings = app.settings.replace(url=url)
    return app


def _plain_app(url: str | None) -> Conveyor:
    return Conveyor(settings=Settings.from_env(url=url))


def _run(coro_fn: Callable[[], Coroutine[Any, Any, None]]) -> None:
    from conveyor.runtime import run_async

    run_async(coro_fn)


def _queues(raw: str | None) -> list[str] | None:
    if raw is None:
        return None  # every queue the app declares
    queues = [q.strip() for q in raw.split(",") if q.strip()]
    if not queues:
        raise click.BadParameter("give at least one queue name")
    return queues


url_option = click.option("--url", default=None, help=URL_HELP)
host_option = click.option("--host", default="127.0.0.1", show_default=True)
port_option = click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
concurrency_option = click.option(
    "--concurrency",
    default=100,
    show_default=True,
    type=click.IntRange(1, 100_000),
    help="jobs run at once per worker process",
)
queues_option = click.option(
    "--queues",
    default=None,
    help="comma-separated queues to consume [default: every queue the app's tasks, "
    "schedules and app.queue() declare, and `default`]",
)
insecure_option = click.option(
    "--insecure-no-auth",
    is_flag=True,
    help="serve without auth on a non-loopback --host (see CONVEYOR_API_TOKENS)",
)
no_scheduler_option = click.option(
    "--no-scheduler",
    is_flag=True,
    help="do not run a scheduler replica in this process (one replica leads at a time)",
)


@click.group()
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    envvar="CONVEYOR_LOG_LEVEL",
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.option(
    "--log-format",
    default="text",
    show_default=True,
    envvar="CONVEYOR_LOG_FORMAT",
    type=click.Choice(LOG_FORMATS, case_sensitive=False),
    help="text for people; json: one object a line, with the job's id, task, queue, "
    "attempt and worker where they apply",
)
@click.version_option(package_name="conveyor")
@click.pass_context
def main(ctx: click.Context, log_level: str, log_format: LogFormat) -> None:
    """Conveyor: an asyncio-native task queue and scheduler with an HTTP job API."""
    configure_logging(log_level, log_format)
    # Worker processes started by a supervisor log as this one does.
    ctx.obj = ["--log-level", log_level.lower(), "--log-format", log_format.lower()]


def _serve(app: Conveyor, banner: str | None = None, **kwargs: Any) -> None:
    """Serve ``app``; ``banner`` goes to stderr once the checks have passed."""
    from conveyor.runtime import serve

    on_ready = None if banner is None else lambda: click.echo(banner, err=True)
    _run(lambda: serve(app, on_ready=on_ready, **kwargs))


def _allow_insecure(app: Conveyor, insecure_no_auth: bool) -> None:
    if insecure_no_auth:
        app.settings = app.settings.replace(allow_insecure_no_auth=True)


@main.command()
@click.argument("app_spec", metavar="APP")
@url_option
@host_option
@port_option
@concurrency_option
@queues_option
@no_scheduler_option
@insecure_option
@_friendly
def run(
    app_spec: str,
    url: str | None,
    host: str,
    port: int,
    concurrency: int,
    queues: str | None,
    no_scheduler: bool,
    insecure_no_auth: bool,
) -> None:
    """API, dashboard, worker and scheduler in one process (the embedded default)."""
    app = _load(app_spec, url)
    _allow_insecure(app, insecure_no_auth)
    _serve(
        app,
        f"Conveyor on http://{host}:{port}  (store: {app.url})",
        host=host,
        port=port,
        concurrency=concurrency,
        queues=_queues(queues),
        scheduler=not no_scheduler,
    )


@main.command()
@click.argument("app_spec", metavar="APP")
@url_option
@host_option
@port_option
@insecure_option
@_friendly
def api(app_spec: str, url: str | None, host: str, port: int, insecure_no_auth: bool) -> None:
    """The HTTP API alone."""
    app = _load(app_spec, url)
    _allow_insecure(app, insecure_no_auth)
    banner = f"Conveyor API on http://{host}:{port}  (store: {app.url})"
    _serve(app, banner, worker=False, host=host, port=port)


@main.command()
@click.argument("app_spec", metavar="APP")
@url_option
@queues_option
@concurrency_option
@click.option(
    "--processes",
    default=1,
    show_default=True,
    type=click.IntRange(1, 256),
    help="worker processes to run and keep alive (restarted if they die)",
)
@click.option(
    "--process-pool",
    default=None,
    type=click.IntRange(1, 1024),
    help="most process-mode tasks at once per worker (default: CPU count)",
)
@no_scheduler_option
@_friendly
def worker(
    app_spec: str,
    url: str | None,
    queues: str | None,
    concurrency: int,
    processes: int,
    process_pool: int | None,
    no_scheduler: bool,
) -> None:
    """Workers: run jobs from the given queues until SIGTERM (and a scheduler replica)."""
    app = _load(app_spec, url)
    if processes > 1:
        from conveyor.worker.supervisor import Supervisor

        command = [
            sys.executable,
            "-m",
            "conveyor",
            *click.get_current_context().find_root().obj,
            "worker",
            app_spec,
            "--url",
            app.url,
            "--concurrency",
            str(concurrency),
        ]
        if queues is not None:
            command += ["--queues", queues]
        if process_pool is not None:
            command += ["--process-pool", str(process_pool)]
        if no_scheduler:
            command.append("--no-scheduler")
        supervisor = Supervisor(command, processes, grace=app.settings.shutdown_grace_seconds)
        sys.exit(supervisor.run())
    _serve(
        app,
        api=False,
        queues=_queues(queues),
        concurrency=concurrency,
        processes=process_pool,
        scheduler=not no_scheduler,
    )


@main.command()
@click.argument("app_spec", metavar="APP")
@url_option
@_friendly
def scheduler(app_spec: str, url: str | None) -> None:
    """A scheduler replica alone: fires the app's and the API's schedules while it leads."""
    app = _load(app_spec, url)
    click.echo(f"Conveyor scheduler  (store: {app.url})", err=True)
    _serve(app, api=False, worker=False, scheduler=True)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@port_option
@insecure_option
@_friendly
def demo(host: str, port: int, insecure_no_auth: bool) -> None:
    """Run the demo app (API, dashboard and worker) on SQLite at ./conveyor.db."""
    app = _load("conveyor.demo:app", None)  # the demo's store: CONVEYOR_URL, or the default
    _allow_insecure(app, insecure_no_auth)
    banner = (
        f"Conveyor demo on http://{host}:{port}  (store: {app.url})\n"
        f"  submit: curl -s -X POST http://{host}:{port}/api/v1/jobs "
        "-H 'content-type: application/json' "
        '-d \'{"type": "resize_image", "parameters": {"url": "https://example.com/cat.png"}}\'\n'
        f"  docs:   http://{host}:{port}/docs"
    )
    _serve(app, banner, host=host, port=port, scheduler=True)


@main.command()
@click.argument("app_spec", metavar="APP")
@click.argument("task_type", metavar="TYPE")
@url_option
@click.option("--params", default="{}", help="JSON object of keyword arguments (or an array)")
@click.option("--delay", default=None, type=click.FloatRange(min=0), help="seconds to wait")
@click.option("--wait", is_flag=True, help="wait for the job and print its result")
@click.option(
    "--timeout",
    default=None,
    type=click.FloatRange(min=0),
    help="with --wait: give up after this many seconds",
)
@_friendly
def enqueue(
    app_spec: str,
    task_type: str,
    url: str | None,
    params: str,
    delay: float | None,
    wait: bool,
    timeout: float | None,
) -> None:
    """Enqueue one job and print its id (or, with --wait, its result)."""
    app = _load(app_spec, url)
    try:
        parameters = loads_input(params, what="--params")
    except ConveyorError as exc:
        raise click.BadParameter(f"must be valid JSON: {exc}", param_hint="--params") from None
    if isinstance(parameters, dict):
        args, kwargs = [], parameters
    elif isinstance(parameters, list):
        args, kwargs = parameters, {}
    else:
        raise click.BadParameter("must be a JSON object or array", param_hint="--params")

    async def go() -> None:
        try:
            result = await app.submit(task_type, args, kwargs, delay=delay)
            if not wait:
                click.echo(result.job.id)
                return
            handle = app.job(result.job.id)
            try:
                value = await handle.result(timeout=timeout)
            except JobFailedError as exc:
                raise click.ClickException(f"job {handle.id} failed: {exc.error}") from None
            click.echo(dumps(value).decode())
        finally:
            await app.aclose()

    asyncio.run(go())


def _when(ts: float | None) -> str:
    if ts is None:
        return ""
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")


@main.command()
@url_option
@click.option("--status", type=click.Choice([s.value for s in JobStatus]), default=None)
@click.option("--type", "task_type", default=None)
@click.option("--queue", default=None)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(1, 1000))
@_friendly
def jobs(
    url: str | None, status: str | None, task_type: str | None, queue: str | None, limit: int
) -> None:
    """List recent jobs as a table."""
    from rich.table import Table

    app = _plain_app(url)

    async def go() -> list[Job]:
        try:
            backend = await app.backend()
            flt = JobFilter(JobStatus(status) if status else None, task_type, queue)
            return (await backend.list_jobs(flt, limit=limit)).items
        finally:
            await app.aclose()

    items = _collect(go)
    table = Table("id", "type", "queue", "status", "progress", "attempts", "created", "finished")
    for job in items:
        table.add_row(
            job.id,
            job.type,
            job.queue,
            job.status.value,
            f"{job.progress}%",
            str(job.attempts),
            _when(job.created_at),
            _when(job.completed_at),
        )
    _console().print(table)


@main.command()
@url_option
@_friendly
def queues(url: str | None) -> None:
    """Queue depths as a table."""
    from rich.table import Table

    app = _plain_app(url)

    async def go() -> list[Any]:
        try:
            backend = await app.backend()
            return list(await backend.queue_stats())
        finally:
            await app.aclose()

    stats = _collect(go)
    table = Table(
        "queue", "pending", "scheduled", "running", "completed", "failed", "cancelled", "paused"
    )
    for q in stats:
        table.add_row(
            q.name,
            str(q.pending),
            str(q.scheduled),
            str(q.running),
            str(q.completed),
            str(q.failed),
            str(q.cancelled),
            "paused" if q.paused else "",
        )
    _console().print(table)


@main.command()
@url_option
@_friendly
def workers(url: str | None) -> None:
    """Live workers as a table."""
    from rich.table import Table

    app = _plain_app(url)

    async def go() -> list[Any]:
        try:
            backend = await app.backend()
            return list(await backend.list_workers())
        finally:
            await app.aclose()

    table = Table("worker", "host", "pid", "queues", "concurrency", "in flight", "last heartbeat")
    for w in _collect(go):
        table.add_row(
            w.id,
            w.host,
            str(w.pid),
            ",".join(w.queues),
            str(w.concurrency),
            str(w.in_flight),
            _when(w.last_heartbeat),
        )
    _console().print(table)


@main.command()
@click.option("--url", default=None, help="store URL (default: a throwaway SQLite file)")
@click.option("--jobs", default=20_000, show_default=True, type=click.IntRange(1, 10_000_000))
@concurrency_option
@click.option(
    "--workers", default=1, show_default=True, type=click.IntRange(1, 64), help="worker processes"
)
@click.option(
    "--rate",
    "rates",
    multiple=True,
    type=click.IntRange(1, 1_000_000),
    help="steady arrival rate(s) for the latency scenario (default: 1000 and 5000)",
)
@click.option("--latency-seconds", default=5.0, show_default=True, type=click.FloatRange(0.5, 600))
@click.option("--no-io", is_flag=True, help="skip the IO-bound scenario")
@click.option(
    "--delayed",
    default=0,
    show_default=True,
    type=click.IntRange(0, 10_000_000),
    help="run the delayed-jobs scenario with this many jobs an hour ahead",
)
@click.option(
    "--json",
    "json_path",
    default=None,
    type=click.Path(dir_okay=False),
    help="also write the figures to this JSON file",
)
@click.option(
    "--allow-tmpfs",
    is_flag=True,
    help="measure a SQLite file on tmpfs/ramfs anyway (the report marks it not durable)",
)
@_friendly
def bench(
    url: str | None,
    jobs: int,
    concurrency: int,
    workers: int,
    rates: tuple[int, ...],
    latency_seconds: float,
    no_io: bool,
    delayed: int,
    json_path: str | None,
    allow_tmpfs: bool,
) -> None:
    """Measure enqueue, drain and queue-wait latency with no-op jobs.

    Every job must complete exactly once, or no figure is printed (exit status 1).
    """
    import shutil

    from rich.table import Table

    from conveyor.benchmark import Bench, scratch_url

    scratch = None
    if url is None:
        url, scratch = scratch_url()
    console = _console()
    status = console.status("starting ...")
    bench_run = Bench(
        url,
        jobs=jobs,
        concurrency=concurrency,
        workers=workers,
        allow_memory_fs=allow_tmpfs,
        say=lambda text: status.update(text),
    )
    with status:
        try:
            report = _collect(
                lambda: bench_run.run(
                    rates=rates or (1000, 5000),
                    latency_seconds=latency_seconds,
                    io=not no_io,
                    delayed=delayed,
                )
            )
        finally:
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
    table = Table(
        "scenario",
        "figure",
        "value",
        title=f"conveyor bench — {report.machine}\n{report.url}, "
        f"{report.workers} worker(s) × {report.concurrency}",
    )
    for f in report.figures:
        table.add_row(f.scenario, f.name, f"{f.value:,.1f} {f.unit}")
    console.print(table)
    console.print(_bench_conditions(report))
    if json_path:
        path = Path(json_path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(dumps(report.as_dict()))


def _bench_conditions(report: Any) -> str:
    """Host speed and store durability, for the title of the bench table."""
    env = report.environment
    speed = env["host_speed_s"]
    store = env["store"]
    durable = "durable" if store.get("durable") else "NOT DURABLE"
    if store["kind"] == "sqlite":
        durable += f" (SQLite synchronous={store['synchronous']} on {store['filesystem']})"
    elif store["kind"] == "redis":
        durable += f" (appendonly {store.get('appendonly')}, {store.get('appendfsync')})"
    return (
        f"Every job completed exactly once. Store: {durable}. Host speed: "
        f"{speed['additions']:,} additions in {speed['before']:.2f} s before, "
        f"{speed['after']:.2f} s after."
    )


T = TypeVar("T")


def _console() -> Any:
    from rich.console import Console

    # Piped output is not cut to 80 columns: job ids must survive `| grep`.
    return Console() if sys.stdout.isatty() else Console(width=250)


def _collect(fn: Callable[[], Coroutine[Any, Any, T]]) -> T:
    return asyncio.run(fn())


if __name__ == "__main__":  # pragma: no cover
    main()
