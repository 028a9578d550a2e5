"""The worker registry: workers appear with their heartbeat and expire without it."""

from __future__ import annotations

import pytest

from conveyor.backends.base import Backend, WorkerInfo
from tests.contract.conftest import ShiftedClock

pytestmark = pytest.mark.timeout(30)


def info(worker_id: str, *, in_flight: int = 0, beat: float = 1000.0) -> WorkerInfo:
    return WorkerInfo(
        id=worker_id,
        host="host-1",
        pid=4242,
        queues=("default", "mail"),
        concurrency=10,
        in_flight=in_flight,
        started_at=999.5,
        last_heartbeat=beat,
    )


async def test_register_list_refresh_unregister(backend: Backend) -> None:
    assert await backend.list_workers() == []
    await backend.register_worker(info("w1"), ttl=30)
    await backend.register_worker(info("w2"), ttl=30)
    assert [w.id for w in await backend.list_workers()] == ["w1", "w2"]
    await backend.register_worker(info("w1", in_flight=7, beat=1001.25), ttl=30)
    (w1, _) = await backend.list_workers()
    assert w1 == info("w1", in_flight=7, beat=1001.25)
    assert w1.queues == ("default", "mail")
    await backend.unregister_worker("w1")
    assert [w.id for w in await backend.list_workers()] == ["w2"]
    await backend.unregister_worker("nobody")  # no-op


async def test_a_worker_expires_after_its_ttl(backend: Backend, clock: ShiftedClock) -> None:
    await backend.register_worker(info("short"), ttl=3)
    await backend.register_worker(info("long"), ttl=60)
    clock.advance(2)
    assert [w.id for w in await backend.list_workers()] == ["long", "short"]
    await backend.register_worker(info("short"), ttl=3)  # a heartbeat keeps it
    clock.advance(2)
    assert [w.id for w in await backend.list_workers()] == ["long", "short"]
    clock.advance(2)
    assert [w.id for w in await backend.list_workers()] == ["long"]
