"""Settings, codec, ids, task registration and argument checking."""

from __future__ import annotations

import dataclasses
import random
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import conveyor
from conveyor import Conveyor, Settings
from conveyor.errors import (
    ConfigurationError,
    InvalidArgumentsError,
    SerializationError,
    UnknownTaskError,
    ValidationError,
)
from conveyor.job import Job, JobStatus, new_job_id
from conveyor.loader import load_app
from conveyor.worker.backoff import retry_delay


def test_public_surface_is_exactly_what_all_lists() -> None:
    public = {name for name in dir(conveyor) if not name.startswith("_")}
    assert set(conveyor.__all__) <= public
    assert sorted(conveyor.__all__) == [
        "Conveyor",
        "Job",
        "JobHandle",
        "JobStatus",
        "Settings",
        "Task",
        "current_job",
        "errors",
    ]


def test_settings_read_the_environment_and_arguments_win() -> None:
    env = {
        "CONVEYOR_URL": "memory://",
        "CONVEYOR_LEASE_SECONDS": "2.5",
        "CONVEYOR_API_TOKENS": "a, b,,",
        "CONVEYOR_WEBHOOK_ALLOW_PRIVATE": "1",
        "CONVEYOR_MAX_BODY_BYTES": "2048",
        "CONVEYOR_MAX_RESULT_BYTES": "4096",
    }
    settings = Settings.from_env(env, lease_seconds=9)
    assert settings.url == "memory://"
    assert settings.lease_seconds == 9
    assert settings.api_tokens == ("a", "b")
    assert settings.webhook_allow_private is True
    assert settings.max_body_bytes == 2048
    assert settings.max_result_bytes == 4096
    assert Settings.from_env({}).max_result_bytes == 1_048_576
    assert Settings.from_env({}).url == "sqlite:///./conveyor.db"


@pytest.mark.parametrize(
    ("env", "needle"),
    [
        ({"CONVEYOR_LEASE_SECONDS": "soon"}, "CONVEYOR_LEASE_SECONDS"),
        ({"CONVEYOR_LEASE_SECONDS": "-1"}, "CONVEYOR_LEASE_SECONDS"),
        ({"CONVEYOR_WEBHOOK_ALLOW_PRIVATE": "maybe"}, "CONVEYOR_WEBHOOK_ALLOW_PRIVATE"),
        ({"CONVEYOR_MAX_BODY_BYTES": "1.5"}, "CONVEYOR_MAX_BODY_BYTES"),
        ({"CONVEYOR_MAX_RESULT_BYTES": "big"}, "CONVEYOR_MAX_RESULT_BYTES"),
        ({"CONVEYOR_MAX_RESULT_BYTES": "0"}, "CONVEYOR_MAX_RESULT_BYTES"),
    ],
)
def test_bad_settings_name_the_variable(env: dict[str, str], needle: str) -> None:
    with pytest.raises(ConfigurationError, match=needle):
        Settings.from_env(env)


def test_unsupported_url_is_a_clear_error() -> None:
    app = Conveyor("postgres://db/x", settings=Settings.from_env({}))
    from conveyor.backends import backend_from_url

    with pytest.raises(ConfigurationError, match="unsupported store URL"):
        backend_from_url(app.url)


def test_job_ids_are_unique_uuid7_in_creation_order() -> None:
    ids = [new_job_id() for _ in range(10_000)]
    assert ids == sorted(ids)
    assert len(set(ids)) == len(ids)
    parsed = uuid.UUID(ids[0])
    assert parsed.version == 7
    assert parsed.variant == uuid.RFC_4122


def test_backoff_is_capped_full_jitter() -> None:
    rng = random.Random(7)
    delays = [retry_delay(attempt, 1.0, 60.0, rng) for attempt in range(1, 30) for _ in range(50)]
    assert all(0 <= d <= 60 for d in delays)
    assert max(retry_delay(1, 1.0, 60.0, rng) for _ in range(500)) <= 1.0
    assert max(retry_delay(10, 1.0, 60.0, rng) for _ in range(500)) > 30  # spread, not fixed
    assert retry_delay(10_000, 1.0, 5.0, rng) <= 5.0


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


def test_load_app_by_path_and_module(tmp_path: Path) -> None:
    source = tmp_path / "myapp.py"
    source.write_text(
        "from conveyor import Conveyor\napp = Conveyor('memory://')\nnot_app = 3\n"
        "@app.task()\nasync def hello() -> str:\n    return 'hi'\n"
    )
    app = load_app(f"{source}:app")
    assert "hello" in app.tasks
    assert app.spec == f"{source.resolve()}:app"
    assert load_app("conveyor.demo:app").tasks
    for spec, needle in [
        ("nocolon", "module:attribute"),
        (f"{source}:missing", "found nothing"),
        (f"{source}:not_app", "found int"),
        (f"{tmp_path}/absent.py:app", "no such file"),
        ("no_such_module_xyz:app", "cannot import"),
    ]:
        with pytest.raises(ConfigurationError, match=needle):
            load_app(spec)
    broken = tmp_path / "broken.py"
    broken.write_text("raise RuntimeError('boom at import')\n")
    with pytest.raises(ConfigurationError, match="boom at import"):
        load_app(f"{broken}:app")


async def test_concurrent_first_use_opens_one_store_connection(tmp_path: Path) -> None:
    import asyncio

    app = Conveyor(settings=Settings.from_env({}, url=f"sqlite:///{tmp_path / 'x.db'}"))
    first, second, third = await asyncio.gather(app.backend(), app.backend(), app.backend())
    assert first is second is third
    await app.aclose()
    again = await app.backend()
    assert again is not first  # closed connections are not handed out again
    await app.aclose()


def test_job_copy_matches_dataclasses_replace_field_for_field() -> None:
    values = {
        f.name: f"value of {f.name}" if f.name != "status" else JobStatus.RUNNING
        for f in dataclasses.fields(Job)
    }
    job = Job(**values)
    copied = job.copy(attempts=3, status=JobStatus.PENDING)
    assert copied == dataclasses.replace(job, attempts=3, status=JobStatus.PENDING)
    assert copied is not job
    assert job.attempts == "value of attempts"  # the original is untouched
    assert job.copy() == job
    with pytest.raises(AttributeError):
        job.copy(no_such_field=1)
