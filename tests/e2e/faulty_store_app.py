"""The end-to-end history app on a SQLite store with a bug: storing outcomes raises
``RuntimeError`` while the file named by ``$FAULT_FILE`` exists."""

from __future__ import annotations

import os
from collections.abc import Sequence

from conveyor.backends.base import Outcome
from conveyor.backends.sqlite import SQLiteBackend
from tests.e2e.history_app import app

__all__ = ["app"]

_complete = SQLiteBackend.complete


async def _faulty_complete(self: SQLiteBackend, outcomes: Sequence[Outcome]) -> list[bool]:
    if os.path.exists(os.environ["FAULT_FILE"]):
        raise RuntimeError("bug in the store layer")
    return await _complete(self, outcomes)


SQLiteBackend.complete = _faulty_complete  # type: ignore[method-assign]
