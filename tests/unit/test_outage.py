"""A repeated failure is logged when it starts, then at most every so often, and when it
ends."""

from __future__ import annotations

import logging

import pytest

from conveyor._outage import Outage


def test_a_failure_repeated_four_times_a_second_for_70_s_writes_four_lines(
    caplog: pytest.LogCaptureFixture,
) -> None:
    now = [0.0]
    outage = Outage(logging.getLogger("tests.outage"), "fetch", every=30, clock=lambda: now[0])
    caplog.set_level(logging.INFO, "tests.outage")
    for _ in range(280):  # 70 s of failures every 250 ms
        outage.failed(OSError("disk full"), retry_in=0.25)
        now[0] += 0.25
    assert outage.ongoing
    outage.succeeded()
    outage.succeeded()  # said once
    lines = [r.getMessage() for r in caplog.records]
    assert lines == [
        "fetch failed (disk full); retrying in 0.25s",
        "fetch still failing after 30s (120 failures since the last report; last: disk full)"
        "; retrying in 0.25s",
        "fetch still failing after 60s (120 failures since the last report; last: disk full)"
        "; retrying in 0.25s",
        "fetch works again after 70.0s and 280 failures",
    ]
    assert not outage.ongoing
    caplog.clear()
    outage.failed(OSError("again"))  # a new outage starts with a new first line
    assert [r.getMessage() for r in caplog.records] == ["fetch failed (again)"]
