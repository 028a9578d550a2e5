"""Feed entries of the Redis store, as the scripts write them, read back as events."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from conveyor.backends.redis._codec import (
    cursor_order,
    event_id,
    events_from_entry,
    job_from_hash,
    last_lease,
    lease_owner,
    parse_event_id,
)


def _dump(value: object) -> str:
    return orjson.dumps(value).decode()


def test_compact_created_and_started_entries_expand_to_one_event_per_job() -> None:
    created = events_from_entry(
        "5-1", {"a": "1.5", "C": "mail", "j": _dump([["j1", "send"], ["j2", "bounce"]])}
    )
    assert [(e.id, e.type, e.job_id, e.at, e.data) for e in created] == [
        (event_id("5-1", None, 0), "job_created", "j1", 1.5, {"queue": "mail", "taskType": "send"}),
        (
            event_id("5-1", None, 1, last=True),
            "job_created",
            "j2",
            1.5,
            {"queue": "mail", "taskType": "bounce"},
        ),
    ]
    started = events_from_entry(
        "6-0", {"a": "2", "S": "w1", "j": _dump(["j1", "j2"]), "n": _dump([1, 3])}
    )
    assert [(e.type, e.job_id, e.data) for e in started] == [
        ("job_started", "j1", {"attempt": 1, "workerId": "w1"}),
        ("job_started", "j2", {"attempt": 3, "workerId": "w1"}),
    ]


_ERR = {"code": "TASK_FAILED", "message": "boom"}
# The outcomes' events as complete.lua stores them: [id, attempt, kind, result JSON,
# error JSON, retry at, task type]...
_EVENTS = [
    ["j1", 1, "c", _dump({"n": 1}), "null", "", "send"],
    ["j2", 2, "c", "null", "null", "", "send"],  # refused
    ["j3", 1, "f", "null", _dump(_ERR), "", "send"],
    ["j4", 1, "r", "null", _dump(_ERR), "12.5", "send"],
    ["j5", 2, "r", "null", _dump(_ERR), "", "send"],
    ["j6", 3, "x", "null", "null", "", "send"],
]
# ... and as older versions stored them: the outcomes as the worker sent them.
_OLDER = [
    [job_id, "8", "w1", str(attempt), kind, result, error, retry_at, "7", task_type]
    for job_id, attempt, kind, result, error, retry_at, task_type in _EVENTS
]


@pytest.mark.parametrize("outcomes", [_EVENTS, _OLDER], ids=["current", "older"])
def test_outcome_entry_holds_only_the_outcomes_that_applied(outcomes: list[list[Any]]) -> None:
    err = _ERR
    events = events_from_entry(
        "9-0", {"a": "3", "O": "mail", "o": _dump(outcomes), "f": "101111"}, "mail"
    )
    head = {"queue": "mail", "taskType": "send"}
    assert [(e.id, e.type, e.job_id, e.data) for e in events] == [
        (
            event_id("9-0", "mail", 0),
            "job_completed",
            "j1",
            {"attempt": 1, **head, "result": {"n": 1}},
        ),
        (event_id("9-0", "mail", 1), "job_failed", "j3", {"attempt": 1, **head, "error": err}),
        (
            event_id("9-0", "mail", 2),
            "job_retrying",
            "j4",
            {"attempt": 1, **head, "error": err, "runAt": 12.5},
        ),
        (
            event_id("9-0", "mail", 3),
            "job_retrying",
            "j5",
            {"attempt": 2, **head, "error": err, "runAt": None},
        ),
        (event_id("9-0", "mail", 4, last=True), "job_released", "j6", {"attempt": 3, **head}),
    ]


def test_entries_written_by_hand_show_as_one_unknown_event() -> None:
    for fields in (
        {"a": "1", "e": "{not json"},
        {"a": "1", "e": _dump({"a": 1})},
        {"a": "1", "S": "w", "j": _dump(["j1"]), "n": _dump([1, 2])},
        {"a": "1", "O": "q", "o": _dump([["too", "short"]]), "f": "1"},
        {"a": "1", "C": "q", "j": "[[1]]"},
        {"hello": "world"},
    ):
        (event,) = events_from_entry("1-0", fields)
        assert (event.type, event.job_id, event.data) == ("unknown", "", {}), fields


def test_last_lease_reads_attempts_start_and_token_and_tolerates_other_forms() -> None:
    assert last_lease("3 1790000000.5 12@host-1-ab") == (3, 1790000000.5, "12@host-1-ab")
    assert last_lease("2") == (2, None, "")  # after a release: attempts alone
    assert last_lease(None) == (0, None, "")  # never leased
    assert last_lease("not a lease") == (0, None, "")  # written by hand
    assert lease_owner("12@host-1-ab") == "host-1-ab"
    assert lease_owner("") == ""


def test_a_record_edited_by_hand_still_reads() -> None:
    job = job_from_hash(
        "j1", {"s": "pending", "d": '{"t": "send", "m": "many"}', "pr": "high", "p": "x"}
    )
    assert (job.type, job.max_retries, job.priority, job.progress) == ("send", 0, 0, 0)


def test_the_last_event_of_an_entry_is_marked_and_cursors_read_either_way() -> None:
    created = _dump([["a", "t"], ["b", "t"]])
    first, last = events_from_entry("7-2", {"a": "1", "C": "q", "j": created})
    assert last.id == "000000000000007-0000000002.0001e"
    assert cursor_order(last.id) == "000000000000007-0000000002.0001"
    assert cursor_order(first.id) == first.id
    cursor = parse_event_id(last.id)
    assert (cursor.entry, cursor.last, cursor.queue) == ((7, 2), True, None)
    # A cursor issued before the mark existed is the same event (not its last, as far
    # as anyone can tell), and so is one written without padding.
    old = parse_event_id("000000000000007-0000000002.0001")
    assert (old.order, old.last) == (cursor.order, False)
    assert parse_event_id("7-2.1e").order == cursor.order
    assert parse_event_id("7-2-mail").last  # entries of older versions hold one event
    legacy = event_id("7-2", "abcdefg")  # a queue name is not a mark
    assert cursor_order(legacy) == legacy
