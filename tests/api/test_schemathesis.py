"""Property-based fuzzing of the whole HTTP API from its own OpenAPI spec (schemathesis,
in-process over ASGI), on the in-memory store, SQLite and Redis: no request, valid or
not, gets a 5xx; every answer conforms to the documented schema (status code, content
type, headers, body); every error has the error shape. A stateful run follows the
spec's links: a submitted job is fetched, cancelled and retried, a created schedule
edited, triggered and deleted.

A bounded run for the suite: about 3300 requests from the spec and 2000 stateful steps
in all, half a minute. ``CONVEYOR_FUZZ_EXAMPLES=N`` sets the examples per operation and
the stateful scenarios per store for a long (and randomized) one.
"""

from __future__ import annotations

import asyncio
import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, Phase, settings
from schemathesis.python.asgi import shutdown_lifespans
from schemathesis.specs.openapi.checks import positive_data_acceptance, use_after_free

from conveyor import Conveyor
from conveyor.api import create_app

from .conftest import STORES, make_conveyor, make_store_url

EXAMPLES = int(os.environ.get("CONVEYOR_FUZZ_EXAMPLES", "15"))
SCENARIOS = int(os.environ.get("CONVEYOR_FUZZ_EXAMPLES", "40"))
# The suite's stateful run is the same every time: whether it follows each link is then
# a property of the code, not of a draw. A long run explores at random.
DERANDOMIZE = "CONVEYOR_FUZZ_EXAMPLES" not in os.environ

pytestmark = [pytest.mark.timeout(600), pytest.mark.filterwarnings("ignore::DeprecationWarning")]

fuzz_settings = settings(
    max_examples=EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck)
)


def error_shape(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """Every error answer is exactly ``{"error": {"code", "message", "details"}}``."""
    if response.status_code < 400:
        return None
    body = response.json()
    assert isinstance(body, dict), body
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"code", "message", "details"}, error
    assert isinstance(error["code"], str), error
    assert error["code"], error
    assert isinstance(error["message"], str), error
    assert error["message"], error
    assert isinstance(error["details"], dict), error
    return True


def schedules_deleted_are_gone(ctx: Any, response: Any, case: schemathesis.Case) -> bool | None:
    """``use_after_free`` for schedules only: ``DELETE /api/v1/jobs/{id}`` cancels a job,
    and a cancelled job stays readable (DESIGN §5), as its record must."""
    if case.operation.path.startswith("/api/v1/jobs"):
        return None
    result: bool | None = use_after_free(ctx, response, case)
    return result


# Every check but two. "Schema-valid data is accepted": whether a task type exists or
# its parameters fit the task's signature is beyond what a JSON schema can say (a 422 is
# right), and the same goes for a cron expression or a time zone. "Use after free" is
# kept for schedules only (above).
EXCLUDED_CHECKS = [positive_data_acceptance, use_after_free]
ADDED_CHECKS = [error_shape, schedules_deleted_are_gone]


def check(case: schemathesis.Case) -> None:
    """Call the API with ``case`` and run every check on the answer."""
    case.call_and_validate(excluded_checks=EXCLUDED_CHECKS, additional_checks=ADDED_CHECKS)


def map_body(context: Any, body: Any) -> Any:
    """Name a task that takes any parameters (``anything(x)``), so that most generated
    submissions and schedules reach the store instead of stopping at UNKNOWN_TASK.

    Only a body whose ``type`` and ``parameters`` are valid on their own is changed, and
    into valid ones: a case meant to be invalid stays invalid elsewhere.
    """
    if not isinstance(body, dict) or context.operation is None:
        return body
    if not context.operation.path.startswith(("/api/v1/jobs", "/api/v1/schedules")):
        return body
    kind, parameters = body.get("type"), body.get("parameters", {})
    if not isinstance(kind, str) or not 1 <= len(kind) <= 200 or "action" in body:
        return body
    if not isinstance(parameters, dict | list):
        return body
    return {**body, "type": "anything", "parameters": {"x": parameters}}


def load_schema(conveyor: Conveyor) -> Any:
    """The spec of an API serving ``conveyor``, without the endless streams (fuzzed in
    tests/api/test_stream_fuzz.py)."""
    schema = schemathesis.openapi.from_asgi("/openapi.json", create_app(conveyor)).exclude(
        path_regex=r"^/api/v1/events/stream$|^/ws/"
    )
    schema.hook(map_body)
    return schema


# One app per store, built at import (schemathesis reads the spec then); its store URL is
# filled in by the store's fixture, and the store opens on the first request.
CONVEYORS: dict[str, Conveyor] = {name: make_conveyor() for name in STORES}
SCHEMAS = {name: load_schema(conveyor) for name, conveyor in CONVEYORS.items()}


def _store_fixture(name: str) -> Any:
    @pytest.fixture(scope="module")
    def bind(
        request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
    ) -> Iterator[Conveyor]:
        conveyor = CONVEYORS[name]
        url = make_store_url(name, tmp_path_factory.mktemp(f"fuzz-{name}"), request)
        conveyor.settings = conveyor.settings.replace(url=url)
        yield conveyor
        # Requests ran on schemathesis' event loop thread; the store is closed there.
        asyncio.run(conveyor.aclose())

    return bind


memory_store = _store_fixture("memory")
sqlite_store = _store_fixture("sqlite")
redis_store = _store_fixture("redis")


@SCHEMAS["memory"].parametrize()
@fuzz_settings
def test_memory(case: schemathesis.Case, memory_store: Conveyor) -> None:
    check(case)


@SCHEMAS["sqlite"].parametrize()
@fuzz_settings
def test_sqlite(case: schemathesis.Case, sqlite_store: Conveyor) -> None:
    check(case)


@SCHEMAS["redis"].parametrize()
@fuzz_settings
def test_redis(case: schemathesis.Case, redis_store: Conveyor) -> None:
    check(case)


# -- stateful: following the links --------------------------------------------------------
JOB = "/api/v1/jobs/{job_id}"


@pytest.mark.parametrize("store", STORES)
def test_links_are_followed(store: str, request: pytest.FixtureRequest, tmp_path: Path) -> None:
    created: set[str] = set()
    # (method, path template, job id) of each call on a job by id
    on_jobs: list[tuple[str, str, str]] = []
    scenarios = itertools.count()

    class Workflow(SCHEMAS[store].as_state_machine()):  # type: ignore[misc]
        """Each scenario on an API and store of its own: what a scenario does then depends
        on its own steps only, as Hypothesis needs to explore and replay them."""

        def setup(self) -> None:
            super().setup()
            directory = tmp_path / f"{tmp_path.name}-{next(scenarios)}"
            directory.mkdir()
            self.conveyor = make_conveyor(make_store_url(store, directory, request))
            self.app = create_app(self.conveyor)

        def teardown(self) -> None:
            asyncio.run(self.conveyor.aclose())
            super().teardown()

        def get_call_kwargs(self, case: schemathesis.Case) -> dict[str, Any]:
            return {"app": self.app}

        def after_call(self, response: Any, case: schemathesis.Case) -> None:
            super().after_call(response, case)
            path, method = case.operation.path, case.method.upper()
            if (method, path) == ("POST", "/api/v1/jobs") and response.status_code == 202:
                created.add(response.json()["jobId"])
            elif path.startswith(JOB):
                on_jobs.append((method, path, str(case.path_parameters["job_id"])))

        def validate_response(
            self,
            response: Any,
            case: schemathesis.Case,
            additional_checks: Any = None,
            **kwargs: Any,
        ) -> None:
            case.validate_response(
                response,
                additional_checks=ADDED_CHECKS,
                excluded_checks=EXCLUDED_CHECKS,
                transport_kwargs=kwargs or None,
                recorder=self.recorder,
            )

    try:
        Workflow.run(
            settings=settings(
                phases=[Phase.generate],
                database=None,
                derandomize=DERANDOMIZE,
                max_examples=SCENARIOS,
                stateful_step_count=20,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
        )
    finally:
        # Each scenario's app started its lifespan on schemathesis' event loop.
        shutdown_lifespans()
    assert created, "no job was ever submitted"
    followed = {(method, path) for method, path, job_id in on_jobs if job_id in created}
    assert followed >= {("GET", JOB), ("DELETE", JOB), ("POST", JOB + "/retry")}, on_jobs
