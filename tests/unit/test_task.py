"""Tasks: registration, argument checking, per-job options, enqueueing."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from conveyor import Conveyor, Settings
from conveyor.errors import (
    ConfigurationError,
    InvalidArgumentsError,
    SerializationError,
    UnknownTaskError,
    ValidationError,
)


def make() -> Conveyor:
    return Conveyor(settings=Settings.from_env({}, url="memory://"))


async def test_arguments_are_checked_against_the_signature() -> None:
    app = make()

    @app.task()
    async def greet(name: str, *, punctuation: str = "!", **extra: int) -> str:
        return name + punctuation

    handle = await greet.enqueue("ada", punctuation="?", times=3)
    job = await handle.info()
    assert job.args == []
    assert job.kwargs == {"name": "ada", "punctuation": "?", "times": 3}
    with pytest.raises(InvalidArgumentsError, match="greet"):
        await greet.enqueue()
    with pytest.raises(InvalidArgumentsError):
        await greet.enqueue("a", "b")
    with pytest.raises(SerializationError):
        await greet.enqueue(object())
    assert await greet("x") == "x!"  # type: ignore[misc]  # still callable as a plain function
    await app.aclose()


async def test_positional_only_arguments_are_kept_positional() -> None:
    app = make()

    @app.task()
    async def total(*numbers: int) -> int:
        return sum(numbers)

    job = await (await total.enqueue(1, 2, 3)).info()
    assert job.args == [1, 2, 3]
    assert job.kwargs == {}


async def test_options_override_task_defaults() -> None:
    app = make()

    @app.task(queue="mail", retries=7, priority=1, timeout=5)
    async def send(to: str) -> None: ...

    now = datetime.now(UTC)
    job = await (
        await send.options(priority=9, queue="urgent", retries=0, timeout=timedelta(seconds=2))
        .options(idempotency_key="k1")
        .enqueue("x@y")
    ).info()
    assert (job.queue, job.priority, job.max_retries, job.timeout) == ("urgent", 9, 0, 2.0)
    assert job.idempotency_key == "k1"
    delayed = await (await send.options(delay=60).enqueue("a")).info()
    assert delayed.run_at - delayed.created_at == pytest.approx(60, abs=0.01)
    at = await (await send.options(run_at=now + timedelta(hours=1)).enqueue("a")).info()
    assert at.run_at == pytest.approx(now.timestamp() + 3600, abs=0.01)


@pytest.mark.parametrize(
    "options",
    [
        {"delay": -1},
        {"retries": -1},
        {"timeout": 0},
        {"queue": ""},
        {"queue": "a/b"},
        {"idempotency_key": ""},
        {"run_at": datetime(2030, 1, 1)},  # naive
        {"delay": 1, "run_at": 5.0},
        {"priority": 10**9},
    ],
)
def test_bad_options_are_refused(options: dict[str, object]) -> None:
    app = make()

    @app.task()
    async def t() -> None: ...

    with pytest.raises(ValidationError):
        t.options(**options)  # type: ignore[arg-type]


def test_task_registration_rules() -> None:
    app = make()

    @app.task
    async def plain() -> None: ...

    @app.task(name="custom-name")
    def blocking() -> None: ...

    assert app.get_task("plain").options_.mode == "async"
    assert app.get_task("custom-name").options_.mode == "thread"
    with pytest.raises(ConfigurationError, match="already registered"):
        app.task(name="plain")(blocking.fn)
    with pytest.raises(ValidationError, match="plain function"):
        app.task(mode="async")(lambda: None)
    with pytest.raises(UnknownTaskError) as caught:
        app.get_task("nope")
    assert caught.value.details["known"] == ["custom-name", "plain"]


def test_enqueue_sync_from_plain_code() -> None:
    app = make()

    @app.task()
    async def ping(n: int) -> int:
        return n

    handle = ping.enqueue_sync(5)
    assert app.run_sync(handle.info()).kwargs == {"n": 5}
    import asyncio

    asyncio.run(app.aclose())
