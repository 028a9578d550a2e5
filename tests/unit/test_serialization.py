"""The JSON codec: what crosses a process boundary arrives exactly as sent, or not at all."""

from __future__ import annotations

import math
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from conveyor import Conveyor
from conveyor.errors import JobFailedError, SerializationError
from conveyor.loader import load_app
from conveyor.serialization import INT_MAX, INT_MIN, dumps, loads, loads_input
from conveyor.worker import Worker
from tests.conftest import running


def test_codec_round_trips_json_and_refuses_the_rest() -> None:
    value = {"a": [1, 2.5, None, True], "b": {"c": "d"}, "u": uuid.UUID(int=5)}
    assert loads(dumps(value)) == {**value, "u": str(uuid.UUID(int=5))}
    for bad in (object(), {1, 2}, datetime.now(UTC), b"bytes"):
        with pytest.raises(SerializationError):
            dumps({"x": bad})
    with pytest.raises(SerializationError, match="undecodable"):
        loads(b"\x80not json")


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinities_are_refused_wherever_they_hide(bad: float) -> None:
    for value in (bad, [1, bad], {"a": {"b": [None, bad]}}, (bad,)):
        with pytest.raises(SerializationError, match="NaN and infinite"):
            dumps(value, what="x")
    assert loads(dumps({"a": None, "b": "null", "c": 1e308})) == {
        "a": None,
        "b": "null",
        "c": 1e308,
    }


def test_integers_keep_their_value_within_64_bits_and_are_refused_beyond() -> None:
    edges = [INT_MIN, -1, 0, 2**53 + 1, 2**63, INT_MAX]
    assert loads_input(dumps(edges)) == edges
    for wide in (INT_MIN - 1, INT_MAX + 1, 10**30):
        with pytest.raises(SerializationError, match="64-bit"):
            dumps([wide])
        with pytest.raises(SerializationError, match=f"integer {wide} is outside"):
            loads_input(f'{{"n": {wide}}}'.encode(), what="body")
    huge = "9" * 100
    with pytest.raises(SerializationError, match=r"\(100 digits\)"):
        loads_input(f"[{huge}]")
    # Long digit runs in strings and exact floats are not integers.
    assert loads_input(f'["{huge}", 1.5e300, 12345678901234567890.5]') == [
        huge,
        1.5e300,
        12345678901234567890.5,
    ]


async def test_enqueue_refuses_non_finite_arguments_at_the_call_site(
    make_app: Callable[..., Conveyor],
) -> None:
    app = make_app()

    @app.task()
    async def echo(x: Any) -> Any:
        return x

    for bad in (math.nan, {"deep": [math.inf]}, 2**64):
        with pytest.raises(SerializationError, match="arguments of task 'echo'"):
            await echo.enqueue(bad)
    assert await app.backend() is not None
    await app.aclose()


@pytest.mark.parametrize("mode", ["async", "thread"])
async def test_a_result_with_no_json_form_fails_the_job_without_retrying(
    make_app: Callable[..., Conveyor], mode: str
) -> None:
    app = make_app()

    if mode == "async":

        @app.task(retries=3)
        async def not_a_number() -> float:
            return math.nan

    else:

        @app.task(retries=3, mode="thread")
        def not_a_number() -> float:
            return math.nan

    async with running(Worker(app)):
        job = await app.get_task("not_a_number").enqueue()
        with pytest.raises(JobFailedError) as caught:
            await job.result(timeout=10)
    error = caught.value.error
    assert error is not None
    assert error["details"]["retryable"] is False
    assert "NaN" in error["message"]
    assert (await job.info()).attempts == 1
    await app.aclose()


async def test_a_process_task_result_with_no_json_form_fails_without_retrying() -> None:
    app = load_app(f"{Path(__file__).parent / 'proc_tasks.py'}:app")
    async with running(Worker(app, processes=1)):
        job = await app.get_task("not_a_number").enqueue()
        with pytest.raises(JobFailedError) as caught:
            await job.result(timeout=60)
    error = caught.value.error
    assert error is not None
    assert error["details"]["retryable"] is False
    assert "NaN" in error["message"]
    assert (await job.info()).attempts == 1
    await app.aclose()
