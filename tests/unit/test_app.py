"""The application object: which queues the code declares."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from conveyor import Conveyor, Settings
from conveyor.worker import Worker


def test_declared_queues_are_default_then_tasks_schedules_and_queue_options(
    make_app: Callable[..., Conveyor],
) -> None:
    app = make_app()

    @app.task(queue="cpu")
    async def crunch() -> None: ...

    @app.task()
    async def plain() -> None: ...

    @app.cron("0 * * * *", queue="nightly")
    async def tick() -> None: ...

    @app.every(60)  # the task's own queue
    async def poll() -> None: ...

    app.queue("emails", max_length=10)
    app.queue("cpu", max_length=5)  # named once, where first named
    assert app.declared_queues() == ["default", "cpu", "nightly", "emails"]
    # A worker given no queues consumes all of them; given some, just those.
    assert Worker(app).queues == ["default", "cpu", "nightly", "emails"]
    assert Worker(app, queues=["cpu"]).queues == ["cpu"]


async def test_concurrent_first_use_opens_one_store_connection(tmp_path: Path) -> None:
    import asyncio

    app = Conveyor(settings=Settings.from_env({}, url=f"sqlite:///{tmp_path / 'x.db'}"))
    first, second, third = await asyncio.gather(app.backend(), app.backend(), app.backend())
    assert first is second is third
    await app.aclose()
    again = await app.backend()
    assert again is not first  # closed connections are not handed out again
    await app.aclose()
