"""Event cursors a store cannot have issued, on every backend: refused with
``ValidationError`` (never a driver error, never an overflow), while a cursor past the
newest event simply reads nothing."""

from __future__ import annotations

import pytest

from conveyor.backends.base import Backend
from conveyor.errors import ValidationError
from tests.contract.helpers import enqueue, make_job

pytestmark = pytest.mark.timeout(30)

NEVER_ISSUED = [
    "9" * 100,  # beyond a 64-bit row number, and not a stream id
    "9" * 5000,  # beyond Python's int-from-text limit
    "9223372036854775808",  # SQLite's INTEGER max + 1
    "18446744073709551616-0",  # a stream id's milliseconds beyond 64 bits
    "1-" + "9" * 30,  # a stream id's sequence beyond 64 bits
    "abc",
    "-1",
    "١٢٣",  # digits, but not ASCII ones
]


@pytest.mark.parametrize("cursor", NEVER_ISSUED)
async def test_a_cursor_the_store_cannot_have_issued_is_refused(
    backend: Backend, cursor: str
) -> None:
    await enqueue(backend, make_job())
    with pytest.raises(ValidationError, match="invalid event cursor") as info:
        await backend.read_events(cursor, 10)
    assert len(info.value.message) < 200  # the cursor is clipped, not echoed whole


#: The highest cursor each store can issue: a well-formed id after every stored event.
HIGHEST = {
    "memory": "9223372036854775807",
    "sqlite": "9223372036854775807",
    "redis": "18446744073709551615-18446744073709551615",
    "redis-cluster": "18446744073709551615-18446744073709551615.9999-default",
}


async def test_the_highest_cursor_reads_nothing(backend: Backend, backend_name: str) -> None:
    await enqueue(backend, make_job())
    assert len(await backend.read_events(None, 10)) == 1
    assert await backend.read_events(HIGHEST[backend_name], 10) == []
