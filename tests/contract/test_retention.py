"""Retention on every backend: finished jobs and events are kept for the store's
``Retention`` and no longer, and a reader whose cursor fell behind what the feed keeps
is told, never silently skipped ahead."""

from __future__ import annotations

import pytest

from conveyor.backends.base import Backend, Retention
from conveyor.errors import HistoryTruncatedError
from tests.contract.conftest import ShiftedClock
from tests.contract.helpers import done, enqueue, make_job

pytestmark = pytest.mark.timeout(30)

SHORT = Retention(result_ttl=5.0, events=10.0)


async def _ids(backend: Backend) -> list[str]:
    return [e.id for e in await backend.read_events(None, 10_000)]


@pytest.mark.parametrize("retention", [SHORT])
async def test_events_older_than_the_retention_are_trimmed(
    backend: Backend, clock: ShiftedClock
) -> None:
    await enqueue(backend, make_job())
    await enqueue(backend, *(make_job() for _ in range(3)))  # one batch
    old = await _ids(backend)
    assert len(old) == 4
    clock.advance(6)
    young = (await enqueue(backend, make_job()))[0]
    clock.advance(5)  # the first four are 11 s old, the last one 5 s
    await backend.purge()

    (kept,) = await backend.read_events(None, 100)
    assert (kept.type, kept.job_id) == ("job_created", young.id)
    # Behind the feed's start, with events lost after the cursor: an error naming the
    # oldest event held, whether the cursor was a single event or inside a batch.
    for cursor in (old[0], old[1], old[2]):
        with pytest.raises(HistoryTruncatedError) as gap:
            await backend.read_events(cursor, 100)
        assert (gap.value.after, gap.value.oldest) == (cursor, kept.id)
        assert gap.value.oldest_at == kept.at
        assert gap.value.lost in (None, 3 - old.index(cursor))
        # The reader that accepts the gap goes on from the oldest event held.
        assert [e.id for e in await backend.read_events(cursor, 100, allow_gap=True)] == [kept.id]


@pytest.mark.parametrize("retention", [SHORT])
async def test_a_reader_that_had_everything_trimmed_is_not_told_of_a_gap(
    backend: Backend, clock: ShiftedClock
) -> None:
    # A caught-up reader (a deliverer, an SSE client) of a feed that then stayed idle
    # for longer than the retention: its last event is gone, but nothing after it.
    await enqueue(backend, *(make_job() for _ in range(3)))
    last = (await _ids(backend))[-1]
    clock.advance(30)
    new = await enqueue(backend, make_job(), make_job())
    await backend.purge()
    events = await backend.read_events(last, 100)
    assert [e.job_id for e in events] == [j.id for j in new]
    assert await backend.read_events(events[-1].id, 100) == []


@pytest.mark.parametrize("retention", [SHORT])
async def test_events_within_the_retention_stay_whatever_the_batch_sizes(
    backend: Backend, clock: ShiftedClock
) -> None:
    # Retention is by age: a large batch does not push earlier events out.
    singles = [(await enqueue(backend, make_job()))[0] for _ in range(50)]
    bulk = await enqueue(backend, *(make_job() for _ in range(1000)))
    clock.advance(9)
    await backend.purge()
    events = await backend.read_events(None, 10_000)
    assert [e.job_id for e in events] == [j.id for j in (*singles, *bulk)]
    for cursor in (events[0].id, events[49].id, events[500].id):
        assert len(await backend.read_events(cursor, 10_000)) == len(events) - 1 - (
            [e.id for e in events].index(cursor)
        )


@pytest.mark.parametrize("retention", [SHORT])
async def test_finished_jobs_go_after_the_result_ttl(backend: Backend, clock: ShiftedClock) -> None:
    completed, cancelled, pending = make_job(), make_job(), make_job()
    await enqueue(backend, completed, cancelled)
    (leased,) = await backend.fetch(["default"], "w", 1, 30)
    assert leased.id == completed.id
    assert await backend.complete([done(leased, "w")]) == [True]
    await backend.cancel(cancelled.id)
    await enqueue(backend, pending)
    clock.advance(4)
    assert await backend.purge() == 0
    clock.advance(2)  # 6 s > the 5 s of SHORT.result_ttl
    assert await backend.purge() == 2
    assert await backend.get_job(completed.id) is None
    assert await backend.get_job(cancelled.id) is None
    assert await backend.get_job(pending.id) is not None
