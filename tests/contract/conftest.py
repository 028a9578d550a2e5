"""The contract suite runs every test once per backend.

To add a backend, add a factory to :data:`FACTORIES`; the tests do not change. A factory
gets a per-test temporary directory, the test's :class:`ShiftedClock`, which it must use
as the store's clock (tests jump it forward to expire leases and retry delays), and the
test's :class:`Retention` (the ``retention`` fixture; a test may parametrize it).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from conveyor.backends.base import Backend, Retention
from conveyor.backends.memory import InMemoryBackend
from conveyor.backends.redis import RedisBackend
from conveyor.backends.sqlite import SQLiteBackend


class ShiftedClock:
    """Real time plus an offset that tests can advance, so both real waits (delayed jobs
    woken by ``wait_for_work``) and instant jumps (lease expiry) work in one test."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.time() + self.offset

    def advance(self, seconds: float) -> None:
        """Move the clock ``seconds`` forward."""
        self.offset += seconds


Factory = Callable[[Path, ShiftedClock, Retention], Backend]

_memory_stores: dict[Path, InMemoryBackend] = {}


def _memory(tmp: Path, clock: ShiftedClock, retention: Retention) -> Backend:
    # One process-wide object is the whole store: every "connection" is that object.
    store = InMemoryBackend("memory://", clock=clock, retention=retention)
    return _memory_stores.setdefault(tmp, store)


# Servers are session fixtures; a backend that needs one names its fixture here, and
# the fixture's ``url`` is filled in before the factory runs.
SERVERS: dict[str, str] = {"redis": "redis_server", "redis-cluster": "redis_cluster"}
_server_urls: dict[str, str] = {}


def _redis(name: str) -> Factory:
    def make(tmp: Path, clock: ShiftedClock, retention: Retention) -> Backend:
        # A key prefix per test (tmp is unique per test) isolates tests on one server.
        url = _server_urls[name]
        sep = "&" if "?" in url else "?"
        return RedisBackend(f"{url}{sep}prefix=t-{tmp.name}", clock=clock, retention=retention)

    return make


FACTORIES: dict[str, Factory] = {
    "memory": _memory,
    "sqlite": lambda tmp, clock, retention: SQLiteBackend(
        f"sqlite:///{tmp / 'contract.db'}", clock=clock, retention=retention
    ),
    "redis": _redis("redis"),
    "redis-cluster": _redis("redis-cluster"),
}


@pytest.fixture
def clock() -> ShiftedClock:
    return ShiftedClock()


@pytest.fixture
def retention() -> Retention:
    """Finished jobs kept a minute, events ten (tests move the clock by less)."""
    return Retention(result_ttl=60.0, events=600.0)


@pytest.fixture(params=sorted(FACTORIES))
def backend_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def make_backend(
    backend_name: str,
    tmp_path: Path,
    clock: ShiftedClock,
    retention: Retention,
    request: pytest.FixtureRequest,
) -> Callable[[], Backend]:
    """Build another handle on the test's store (for sqlite: another connection)."""
    if backend_name in SERVERS:
        _server_urls[backend_name] = request.getfixturevalue(SERVERS[backend_name]).url

    def make() -> Backend:
        return FACTORIES[backend_name](tmp_path, clock, retention)

    return make


@pytest.fixture
async def backend(make_backend: Callable[[], Backend]) -> AsyncIterator[Backend]:
    store = make_backend()
    await store.open()
    try:
        yield store
    finally:
        await store.aclose()
