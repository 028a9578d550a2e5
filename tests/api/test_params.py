"""Parameters are checked against the task's signature and annotations."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from conveyor import Conveyor
from conveyor.api.params import ParameterChecker
from conveyor.errors import InvalidArgumentsError

from .conftest import assert_error


async def post(client: httpx.AsyncClient, type_: str, parameters: Any) -> httpx.Response:
    return await client.post("/api/v1/jobs", json={"type": type_, "parameters": parameters})


@pytest.mark.parametrize(
    ("type_", "parameters", "stored"),
    [
        ("add", {"a": 1, "b": 2}, {"a": 1, "b": 2}),
        ("add", [1, 2], {"a": 1, "b": 2}),
        ("add", [1], None),
        ("send_email", {"to": "x", "cc": ["y", "z"]}, {"to": "x", "cc": ["y", "z"]}),
        ("send_email", {"to": "x", "cc": None}, {"to": "x", "cc": None}),
        ("anything", {"x": {"deep": [1, "two", None]}}, {"x": {"deep": [1, "two", None]}}),
        ("total", [1, 2.5, 3], [1, 2.5, 3]),
        ("total", [], {}),
        ("tagged", [1], [1]),
        ("at", {"when": "2030-01-01T00:00:00Z"}, {"when": "2030-01-01T00:00:00Z"}),
    ],
)
async def test_accepted_parameters_are_stored_as_sent(
    client: httpx.AsyncClient, type_: str, parameters: Any, stored: Any
) -> None:
    response = await post(client, type_, parameters)
    if stored is None:  # add([1]) is missing b
        assert_error(response, 422, "VALIDATION_ERROR")
        return
    assert response.status_code == 202, response.text
    job = (await client.get(f"/api/v1/jobs/{response.json()['jobId']}")).json()
    assert job["parameters"] == stored


@pytest.mark.parametrize(
    ("type_", "parameters", "loc", "kind"),
    [
        ("add", {"a": "1", "b": 2}, ["parameters", "a"], "int_type"),
        ("add", {"a": 1.5, "b": 2}, ["parameters", "a"], "int_type"),
        ("add", {"a": True, "b": 2}, ["parameters", "a"], "int_type"),
        ("add", {"a": 1}, ["parameters", "b"], "missing_argument"),
        ("add", {"a": 1, "b": 2, "c": 3}, ["parameters", "c"], "unexpected_argument"),
        ("add", [1, 2, 3], ["parameters", 2], "extra_argument"),
        ("send_email", {"to": 5}, ["parameters", "to"], "string_type"),
        ("send_email", {"to": "x", "cc": "y"}, ["parameters", "cc"], "list_type"),
        ("send_email", {"to": "x", "cc": [1]}, ["parameters", "cc", 0], "string_type"),
        ("send_email", ["x", "s", ["cc"]], ["parameters", 2], "extra_argument"),
        ("total", [1, "two"], ["parameters", "numbers", 1], "float_type"),
        ("total", {"numbers": [1]}, ["parameters", "numbers"], "unexpected_argument"),
        ("tagged", {"a": 1}, ["parameters", "a"], "missing_argument"),
        ("tagged", [1, 2], ["parameters", 1], "extra_argument"),
        ("at", {"when": "yesterday"}, ["parameters", "when"], "datetime_parsing"),
        ("at", {"when": 1700000000}, ["parameters", "when"], "datetime_type"),
    ],
)
async def test_refused_parameters_name_the_field(
    client: httpx.AsyncClient, type_: str, parameters: Any, loc: list[Any], kind: str
) -> None:
    error = assert_error(await post(client, type_, parameters), 422, "VALIDATION_ERROR")
    errors = error["details"]["errors"]
    assert errors[0]["loc"] == loc, errors
    assert errors[0]["type"] == kind, errors
    assert type_ in error["message"]


async def test_positional_only_parameter_cannot_be_named(conveyor: Conveyor) -> None:
    checker = ParameterChecker()
    task = conveyor.get_task("tagged")
    with pytest.raises(InvalidArgumentsError) as info:
        checker.check(task, {"a": 1})
    assert info.value.details["errors"][0]["loc"] == ["parameters", "a"]


def test_validator_is_built_once_per_task(conveyor: Conveyor) -> None:
    checker = ParameterChecker()
    task = conveyor.get_task("add")
    checker.check(task, [1, 2])
    compiled = checker._compiled["add"]
    checker.check(task, {"a": 3, "b": 4})
    assert checker._compiled["add"] is compiled


def test_unresolvable_annotations_take_anything() -> None:
    app = Conveyor(settings=__import__("conveyor").Settings(url="memory://"))

    async def odd(a: "NoSuchType", b: "int") -> None:  # type: ignore[name-defined]  # noqa: F821, UP037
        return None

    task = app.task(odd)
    checker = ParameterChecker()
    assert checker.check(task, {"a": object.__name__, "b": 1}) == ([], {"a": "object", "b": 1})
    with pytest.raises(InvalidArgumentsError):
        checker.check(task, {"a": 1, "b": "1"})


def test_types_pydantic_cannot_validate_take_anything() -> None:
    app = Conveyor(settings=__import__("conveyor").Settings(url="memory://"))

    class Opaque:
        pass

    async def opaque(thing: Opaque, n: int) -> None:
        return None

    task = app.task(opaque)
    checker = ParameterChecker()
    assert checker.check(task, {"thing": {"any": 1}, "n": 2})[1] == {"thing": {"any": 1}, "n": 2}
    with pytest.raises(InvalidArgumentsError):
        checker.check(task, {"thing": 1, "n": "2"})


def test_parameter_named_like_model_attributes() -> None:
    app = Conveyor(settings=__import__("conveyor").Settings(url="memory://"))

    async def shadow(json: int, model_config: str, schema: list[int]) -> None:
        return None

    task = app.task(shadow)
    checker = ParameterChecker()
    checker.check(task, {"json": 1, "model_config": "x", "schema": [1]})
    with pytest.raises(InvalidArgumentsError):
        checker.check(task, {"json": "1", "model_config": "x", "schema": [1]})
