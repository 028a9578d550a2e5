"""The leader lease both the scheduler and the webhook deliverer run on."""

from __future__ import annotations

import logging

import pytest

from conveyor.backends.memory import InMemoryBackend
from conveyor.errors import BackendUnavailableError, LostLeadershipError
from conveyor.leadership import LeaderLease, replica_id


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_one_holder_at_a_time_with_a_growing_token() -> None:
    store_clock = Clock()
    backend = InMemoryBackend("memory://", clock=store_clock)
    local = Clock()
    a = LeaderLease("demo", 3.0, owner="a", clock=local)
    b = LeaderLease("demo", 3.0, owner="b", clock=local)
    assert await a.acquire(backend)
    assert not await b.acquire(backend)
    first = a.token
    assert a.held
    assert not b.held
    assert await a.acquire(backend)  # a renewal keeps the token
    assert a.token == first
    await a.release(backend)
    assert not a.held
    assert await b.acquire(backend)  # at once, not after the ttl
    assert b.token is not None
    assert first is not None
    assert b.token > first
    assert (a.terms, b.terms) == (1, 1)


async def test_trust_ends_before_the_lock_can_expire_however_renewals_fare() -> None:
    backend = InMemoryBackend("memory://", clock=Clock())
    local = Clock()
    lease = LeaderLease("demo", 3.0, owner="a", clock=local)
    assert await lease.acquire(backend)

    async def down(*args: object) -> None:
        raise BackendUnavailableError("store down")

    backend.acquire_lock = down  # type: ignore[method-assign]
    local.now += 2.6  # renewals fail: still within sent + ttl - ttl/10 = +2.7
    assert await lease.try_acquire(backend)
    lease.check()
    local.now += 0.2
    assert not await lease.try_acquire(backend)
    with pytest.raises(LostLeadershipError, match="no longer holds the demo lock"):
        lease.check()


async def test_keep_renews_until_the_lock_is_taken_away(caplog: pytest.LogCaptureFixture) -> None:
    backend = InMemoryBackend("memory://")
    lease = LeaderLease("demo", 0.3, owner="a")
    assert await lease.acquire(backend)
    renewals = 0
    acquire = backend.acquire_lock

    async def counted(name: str, owner: str, ttl: float) -> int | None:
        nonlocal renewals
        renewals += 1
        if renewals == 3:
            await backend.release_lock(name, owner)
            assert await acquire(name, "thief", 60) is not None
        return await acquire(name, owner, ttl)

    backend.acquire_lock = counted  # type: ignore[method-assign]
    caplog.set_level(logging.WARNING, "conveyor.leadership")
    with pytest.raises(LostLeadershipError):
        await lease.keep(backend)
    assert renewals == 3
    assert "a lost the leader lock" in caplog.text


def test_replica_ids_name_host_and_pid_and_differ() -> None:
    first, second = replica_id(), replica_id()
    assert first != second
    host, pid, _ = first.split(":")
    assert host
    assert pid.isdigit()
