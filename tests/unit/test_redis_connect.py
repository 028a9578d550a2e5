"""Which Redis errors mean "the store cannot serve now" (a 503 over HTTP) and which are
errors a retry cannot fix (a bug to look at): the server's answers are parsed by
redis-py's own parser, as they arrive from a real server."""

from __future__ import annotations

import pytest
from redis._parsers.base import BaseParser
from redis.exceptions import ConnectionError, TimeoutError

from conveyor.backends.redis._connect import translate
from conveyor.backends.redis._keys import display_url
from conveyor.errors import BackendError, BackendUnavailableError

NOT_NOW = [
    "LOADING Redis is loading the dataset in memory",
    "READONLY You can't write against a read only replica.",
    "OOM command not allowed when used memory > 'maxmemory'.",
    "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE.",
    "MASTERDOWN Link with MASTER is down and replica-serve-stale-data is set to 'no'.",
    "CLUSTERDOWN The cluster is down",
    "TRYAGAIN Multiple keys request during rehashing of slot",
    "NOREPLICAS Not enough good replicas to write.",
    "ERR max number of clients reached",
]

NEVER = [
    "WRONGTYPE Operation against a key holding the wrong kind of value",
    "ERR Error running script (call to f_1234): @user_script:1: bad argument",
    "ERR Invalid stream ID specified as stream command argument",
    "BUSYGROUP Consumer Group name already exists",
    "BUSYKEY Target key name already exists.",
    "NOPERM this user has no permissions to run the 'xadd' command",
]


@pytest.mark.parametrize("answer", NOT_NOW)
def test_answers_meaning_not_now_are_unavailability(answer: str) -> None:
    translated = translate(BaseParser.parse_error(answer), "read_events")
    assert isinstance(translated, BackendUnavailableError), answer
    assert str(translated).startswith("Redis read_events: ")


@pytest.mark.parametrize("answer", NEVER)
def test_answers_a_retry_cannot_fix_are_backend_errors(answer: str) -> None:
    translated = translate(BaseParser.parse_error(answer), "enqueue")
    assert isinstance(translated, BackendError), answer
    assert not isinstance(translated, BackendUnavailableError), answer


@pytest.mark.parametrize(
    "error",
    [ConnectionError("Connection refused"), TimeoutError("Timeout reading"), OSError(104, "x")],
)
def test_connection_failures_are_unavailability(error: Exception) -> None:
    assert isinstance(translate(error, "fetch"), BackendUnavailableError)


def test_other_exceptions_pass_unchanged() -> None:
    bug = OverflowError("int too large")
    assert translate(bug, "fetch") is bug


def test_urls_in_logs_and_messages_hide_the_password() -> None:
    assert display_url("redis://:s3cret@h:1/0") == "redis://:***@h:1/0"
    assert display_url("rediss://user:s3cret@h:1/0?x=1") == "rediss://user:***@h:1/0?x=1"
    assert display_url("redis://user@h:1/0") == "redis://user@h:1/0"
    assert display_url("redis://h:1/0") == "redis://h:1/0"
