"""``CONVEYOR_MAX_RESULT_BYTES``: a result over it fails its job without retrying, in
every execution mode; a result within it is encoded once on its way to the store."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import pytest

from conveyor import Conveyor, JobStatus
from conveyor.errors import JobFailedError, ResultTooLargeError
from conveyor.job import JobHandle
from conveyor.loader import load_app
from conveyor.results import encode_result
from conveyor.worker import Worker
from tests.conftest import running

pytestmark = pytest.mark.timeout(60)


def test_encode_result_allows_the_limit_and_refuses_a_byte_more() -> None:
    assert encode_result("x" * 8, limit=10, what="result") == b'"xxxxxxxx"'
    with pytest.raises(ResultTooLargeError) as caught:
        encode_result("x" * 9, limit=10, what="result of task 'big'")
    assert (caught.value.size, caught.value.limit) == (11, 10)
    assert str(caught.value).startswith("result of task 'big' is 11 bytes of JSON")
    assert "CONVEYOR_MAX_RESULT_BYTES" in str(caught.value)


async def assert_too_large(handle: JobHandle[Any], size: int, limit: int) -> None:
    """The job failed at once, non-retryably, with an error naming size and setting."""
    with pytest.raises(JobFailedError) as caught:
        await handle.result(timeout=60)
    error = caught.value.error
    assert error is not None
    assert error["details"] == {
        "reason": "result_too_large",
        "retryable": False,
        "exceptionType": "conveyor.errors.ResultTooLargeError",
    }
    message = error["message"]
    assert message.startswith(f"result of task 'text' is {size:,} bytes of JSON")
    assert f"over the limit of {limit:,} (CONVEYOR_MAX_RESULT_BYTES)" in message
    info = await handle.info()
    assert (info.status, info.attempts, info.result) == (JobStatus.FAILED, 1, None)


@pytest.mark.parametrize("mode", ["async", "thread"])
async def test_a_result_over_the_limit_fails_the_job_without_retrying(
    make_app: Callable[..., Conveyor], mode: str
) -> None:
    app = make_app(max_result_bytes=1000)

    if mode == "async":

        @app.task(retries=3)
        async def text(size: int) -> str:
            return "x" * size

    else:

        @app.task(retries=3, mode="thread")
        def text(size: int) -> str:
            return "x" * size

    task = app.get_task("text")
    async with running(Worker(app)):
        fits = await task.enqueue(998)  # 1,000 bytes of JSON: the limit
        over = await task.enqueue(999)
        assert await fits.result(timeout=10) == "x" * 998
        await assert_too_large(over, 1001, 1000)
    await app.aclose()


async def test_a_process_task_result_over_the_limit_fails_in_the_child() -> None:
    app = load_app(f"{Path(__file__).parent / 'proc_tasks.py'}:app")
    limit = app.settings.max_result_bytes
    assert limit == 1_048_576  # the default
    task = app.get_task("text")
    async with running(Worker(app, processes=1)):
        over = await task.enqueue(limit - 1)  # with its quotes, a byte over
        fits = await task.enqueue(limit - 2)
        await assert_too_large(over, limit + 1, limit)
        assert await fits.result(timeout=60) == "x" * (limit - 2)
    await app.aclose()


@pytest.mark.parametrize("store", ["sqlite", "redis"])
async def test_a_result_is_encoded_once_from_task_to_store(
    make_app: Callable[..., Conveyor],
    store: str,
    tmp_path: Path,
    request: pytest.FixtureRequest,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if store == "sqlite":
        url = f"sqlite:///{tmp_path}/once.db"
    else:
        url = f"{request.getfixturevalue('redis_server').url}?prefix=once-{tmp_path.name}"
    app = make_app(url)
    value = {"rows": ["x" * 100] * 100}

    @app.task()
    async def produce() -> dict[str, list[str]]:
        return value

    encodings: list[int] = []
    dumps = orjson.dumps

    def counting(obj: Any, *args: Any, **kwargs: Any) -> bytes:
        if obj is value:
            encodings.append(1)
        return dumps(obj, *args, **kwargs)

    monkeypatch.setattr(orjson, "dumps", counting)
    async with running(Worker(app)):
        handle = await produce.enqueue()
        assert await handle.result(timeout=10) == value
    assert len(encodings) == 1
    await app.aclose()
