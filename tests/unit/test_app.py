"""The application object: which queues the code declares."""

from __future__ import annotations

from collections.abc import Callable

from conveyor import Conveyor
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
