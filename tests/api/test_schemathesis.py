"""Property-based fuzzing of the whole HTTP API from its own OpenAPI spec (schemathesis,
in-process over ASGI): no request, valid or not, gets a 5xx, and every answer conforms to
the documented schema (status code, content type, headers, body).

A bounded run for the suite; raise ``CONVEYOR_FUZZ_EXAMPLES`` for a long one (G13)."""

from __future__ import annotations

import os

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from conveyor.api import create_app
from tests.api.conftest import make_conveyor

EXAMPLES = int(os.environ.get("CONVEYOR_FUZZ_EXAMPLES", "100"))

_app = create_app(make_conveyor())
schema = schemathesis.openapi.from_asgi("/openapi.json", _app).exclude(
    # Endless streams are tested on their own (tests/api/test_events.py, test_ws.py).
    path_regex=r"^/api/v1/events/stream$|^/ws/",
)

pytestmark = [pytest.mark.timeout(300), pytest.mark.filterwarnings("ignore::DeprecationWarning")]


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
)
def test_api_conforms_to_its_spec(case: schemathesis.Case) -> None:
    # Every check but "schema-valid data is accepted": whether a task type exists or
    # parameters fit its signature is beyond what a JSON schema can say (422 is right).
    case.call_and_validate(excluded_checks=[positive_data_acceptance])
