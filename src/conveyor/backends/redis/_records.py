"""Job records, listings, cancel/retry, purge, counts and the event feed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from conveyor.backends._common import leave_out_large_result
from conveyor.backends.base import Event, JobFilter, JobPage, QueueStats
from conveyor.backends.redis._base import Call, RedisBase
from conveyor.backends.redis._codec import (
    FIELDS_BUT_RESULT,
    EventCursor,
    cursor_order,
    events_from_entry,
    job_from_hash,
    last_lease,
    pairs,
    parse_event_id,
    stream_entry,
)
from conveyor.backends.redis._connect import guarded
from conveyor.backends.redis._keys import QueueKeys
from conveyor.backends.redis._scripts import Arg
from conveyor.errors import ConflictError, HistoryTruncatedError, JobNotFoundError
from conveyor.job import Job, JobStatus
from conveyor.results import INLINE_RESULT_MAX

#: The most expired jobs one purge call removes per queue and round.
PURGE_CAP = 1000
_LIST_CHUNK = 50
#: Entries asked for by the first read of the event feed (each holds 1 to 1,000 events).
_FEED_FIRST_READ = 16
#: Seconds by which this process's clock may lag the clock of a process writing the
#: feed before a trimmed cursor could go unnoticed (see ``_may_have_trimmed``).
_CLOCK_SLACK = 60.0


@dataclass(slots=True)
class _Source:
    """One queue's index, read newest first in chunks for a k-way merge."""

    queue: str
    key: str
    upper: str  # lex bound for the next chunk
    buffer: list[str] = field(default_factory=list)
    exhausted: bool = False


class RecordsMixin(RedisBase):
    """The record-keeping half of :class:`~conveyor.backends.redis.RedisBackend`."""

    async def _queues(self) -> list[str]:
        return sorted(await self.client.smembers(self._g.queues))

    @guarded
    async def get_job(self, job_id: str) -> Job | None:
        route = (await self._resolve([job_id])).get(job_id)
        if route is None:
            return None
        return next(iter(await self._load(route[0], [job_id])), None)

    async def _load(self, queue: str, ids: list[str], *, listing: bool = False) -> list[Job]:
        """The records of ``ids`` (one queue's); ``listing``: as :meth:`list_jobs` shows
        them, large results left out and not read."""
        k = self.keys(queue)
        sizes: list[int] = []
        if listing:
            rows, sizes = await self._read_listed(k, ids)
        else:
            pipe = self.client.pipeline(transaction=False)
            for job_id in ids:
                pipe.hgetall(k.job(job_id))
            rows = await pipe.execute()
        # A running job's lease deadline is the score of its token.
        tokens = [last_lease(row.get("l"))[2] if row.get("s") == "running" else "" for row in rows]
        deadlines: dict[str, float] = {}
        if any(tokens):
            ordered = sorted({t for t in tokens if t})
            scores = await self.client.zmscore(k.leases, ordered)
            deadlines = {t: d for t, d in zip(ordered, scores, strict=True) if d is not None}
        jobs = [
            job_from_hash(i, row, deadlines.get(token))
            for i, row, token in zip(ids, rows, tokens, strict=True)
            if row
        ]
        if sizes:
            size_of = dict(zip(ids, sizes, strict=True))
            jobs = [leave_out_large_result(job, size_of[job.id]) for job in jobs]
        return jobs

    async def _read_listed(
        self, k: QueueKeys, ids: list[str]
    ) -> tuple[list[dict[str, str]], list[int]]:
        """The fields of ``ids``' records and their results' sizes; a result is read (a
        second round trip) only when small enough to be listed."""
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hmget(k.job(job_id), FIELDS_BUT_RESULT)
            pipe.hstrlen(k.job(job_id), "res")
        answers = await pipe.execute()
        rows = [
            {name: v for name, v in zip(FIELDS_BUT_RESULT, values, strict=True) if v is not None}
            for values in answers[::2]
        ]
        sizes = [int(size) for size in answers[1::2]]
        small = [n for n, size in enumerate(sizes) if 0 < size <= INLINE_RESULT_MAX]
        if small:
            for n in small:
                pipe.hget(k.job(ids[n]), "res")
            for n, result in zip(small, await pipe.execute(), strict=True):
                if result is not None and rows[n]:
                    rows[n]["res"] = result
        return rows, sizes

    @guarded
    async def list_jobs(
        self, filter: JobFilter, *, limit: int, cursor: str | None = None
    ) -> JobPage:
        limit = max(0, limit)
        queues = [filter.queue] if filter.queue is not None else await self._queues()
        sources = [s for q in queues for s in await self._sources(q, filter.status, cursor)]
        items: list[Job] = []
        seen: set[str] = set()  # a job that changed state mid-listing is in two indexes
        while len(items) <= limit:
            batch = await self._next_ids(sources, limit + 1 - len(items))
            if not batch:
                break
            for queue, ids in _group(batch).items():
                loaded = {job.id: job for job in await self._load(queue, ids, listing=True)}
                for job_id in ids:
                    job = loaded.get(job_id)
                    if job is not None and job.id not in seen and _matches(job, filter):
                        seen.add(job.id)
                        items.append(job)
            items.sort(key=lambda j: j.id, reverse=True)
        next_cursor = items[limit - 1].id if len(items) > limit > 0 else None
        return JobPage(items[:limit], next_cursor)

    async def _sources(
        self, queue: str, status: JobStatus | None, cursor: str | None
    ) -> list[_Source]:
        """The indexes holding a queue's jobs of ``status`` (all statuses: every index)."""
        k = self.keys(queue)
        upper = "+" if cursor is None else f"({cursor}"
        indexes = {
            JobStatus.PENDING: k.pending,
            JobStatus.COMPLETED: k.completed,
            JobStatus.FAILED: k.failed,
            JobStatus.CANCELLED: k.cancelled,
        }
        sources = [
            _Source(queue, key, upper)
            for state, key in indexes.items()
            if status is None or status is state
        ]
        if status is None or status is JobStatus.RUNNING:
            # Running jobs are the members of the lease tokens' sets; there are never
            # more of them than jobs in flight.
            pipe = self.client.pipeline(transaction=False)
            for token in await self.client.zrange(k.leases, 0, -1):
                pipe.smembers(k.lease_set(token))
            ids = sorted((i for members in await pipe.execute() for i in members), reverse=True)
            if cursor is not None:
                ids = [i for i in ids if i < cursor]
            sources.append(_Source(queue, k.leases, upper, ids, exhausted=True))
        return sources

    async def _next_ids(self, sources: list[_Source], want: int) -> list[tuple[str, str]]:
        """Up to ``want`` (queue, id) pairs, newest id first across all sources."""
        out: list[tuple[str, str]] = []
        while len(out) < want:
            empty = [s for s in sources if not s.buffer and not s.exhausted]
            if empty:
                pipe = self.client.pipeline(transaction=False)
                for s in empty:
                    pipe.zrevrangebylex(s.key, s.upper, "-", start=0, num=_LIST_CHUNK)
                for s, chunk in zip(empty, await pipe.execute(), strict=True):
                    s.buffer = list(chunk)
                    s.exhausted = len(chunk) < _LIST_CHUNK
                    if chunk:
                        s.upper = f"({chunk[-1]}"
            live = [s for s in sources if s.buffer]
            if not live:
                break
            best = max(live, key=lambda s: s.buffer[0])
            out.append((best.queue, best.buffer.pop(0)))
        return out

    @guarded
    async def cancel(self, job_id: str) -> Job:
        route = (await self._resolve([job_id])).get(job_id)
        if route is None:
            raise JobNotFoundError(job_id)
        k = self.keys(route[0])
        keys = [k.job(job_id), k.leases, k.delayed, k.pending, k.cancelled, k.events]
        keys.append(k.stream(route[1]))
        args: list[Arg] = [self._now_arg(), job_id, self._ttl_ms()]
        return self._answer(job_id, await self.scripts["cancel"](self.client, keys, args), "cancel")

    @guarded
    async def retry(self, job_id: str) -> Job:
        route = (await self._resolve([job_id])).get(job_id)
        if route is None:
            raise JobNotFoundError(job_id)
        k = self.keys(route[0])
        keys = [k.job(job_id), k.pending, k.failed, k.cancelled, k.events, k.wake]
        keys.append(k.stream(route[1]))
        answer = await self.scripts["retry"](self.client, keys, [self._now_arg(), job_id])
        return self._answer(job_id, answer, "retry")

    def _answer(self, job_id: str, answer: list[Any], action: str) -> Job:
        if answer[0] == "MISSING":
            raise JobNotFoundError(job_id)
        if answer[0] == "CONFLICT":
            if action == "cancel":
                raise ConflictError(f"job {job_id} is already {answer[1]}")
            raise ConflictError(f"job {job_id} is {answer[1]}, not failed or cancelled")
        return job_from_hash(job_id, pairs(answer[1]))

    @guarded
    async def purge(self) -> int:
        """Delete finished jobs older than the result retention (and, on a cluster, their
        routes), and trim events older than the event retention exactly.

        Records of finished jobs also carry a Redis TTL (the same retention, set when
        they finish) and every write trims the feed roughly, so memory stays bounded
        even when nobody purges; this call judges age by the store's clock and cleans
        the indexes.
        """
        deleted = 0
        await self._trim_feeds()
        result_ttl = self.retention.result_ttl
        now_arg = self._now_arg()
        # Where each queue's scan of its three finished indexes resumes ("": done).
        todo = {queue: ["-", "-", "-"] for queue in await self._queues()}
        for _ in range(100):
            if not todo:
                break
            calls: list[Call] = []
            for queue, starts in todo.items():
                k = self.keys(queue)
                keys = [k.completed, k.failed, k.cancelled, k.done]
                args: list[Arg] = [
                    now_arg,
                    k.job_prefix,
                    repr(float(result_ttl)),
                    PURGE_CAP,
                    *starts,
                ]
                calls.append((self.scripts["purge"], keys, args))
            answers = await self._run(calls)
            removed: list[str] = []
            again: dict[str, list[str]] = {}
            for queue, (count, ids, resume) in zip(todo, answers, strict=True):
                deleted += int(count)
                removed += ids
                if any(resume):
                    again[queue] = list(resume)
            if removed and self.cluster:
                pipe = self.client.pipeline(transaction=False)
                for job_id in removed:
                    pipe.delete(self._g.route(job_id))
                await pipe.execute()
            self._forget(removed)
            todo = again
        return deleted

    async def _trim_feeds(self) -> None:
        cutoff = int((await self.now() - self.retention.events) * 1000)
        keys = (
            [self._g.events]
            if not self.cluster
            else [self.keys(q).events for q in await self._queues()]
        )
        # Exact (not `~`): what a write left of the oldest radix tree node goes too.
        await asyncio.gather(
            *(self.client.xtrim(key, minid=cutoff, approximate=False) for key in keys)
        )

    @guarded
    async def queue_stats(self) -> list[QueueStats]:
        queues = await self._queues()
        now_arg = self._now_arg()
        calls: list[Call] = []
        for queue in queues:
            k = self.keys(queue)
            keys = [k.pending, k.delayed, k.leases, k.completed, k.failed, k.cancelled, k.conf]
            calls.append((self.scripts["stats"], keys, [now_arg]))
        out: list[QueueStats] = []
        for queue, answer in zip(queues, await self._run(calls) if calls else [], strict=True):
            pending, scheduled, running, completed, failed, cancelled = (int(c) for c in answer[:6])
            paused = answer[6] == "1"
            max_length = int(answer[7]) if answer[7] else None
            if paused or max_length is not None or any(int(c) for c in answer[:6]):
                out.append(
                    QueueStats(
                        queue,
                        pending,
                        scheduled,
                        running,
                        completed,
                        failed,
                        cancelled,
                        paused=paused,
                        max_length=max_length,
                    )
                )
        return out

    @guarded
    async def read_events(
        self, after: str | None, limit: int, *, allow_gap: bool = False
    ) -> list[Event]:
        if limit <= 0:
            return []
        cursor = parse_event_id(after) if after else None
        if not self.cluster:
            feeds: list[tuple[str, str | None]] = [(self._g.events, None)]
        else:
            # One feed per queue (a script may only touch its queue's slot): merged here
            # by event id (stream id, index, queue). Streams of different queues get their
            # ids from different servers' clocks, so across queues the order is by time
            # only to within clock skew; within a queue it is exact.
            feeds = [(self.keys(q).events, q) for q in await self._queues()]
        reads = await asyncio.gather(
            *(self._read_feed(key, cursor, limit, queue) for key, queue in feeds)
        )
        events = [e for read in reads for e in read.events]
        if len(reads) > 1:
            events.sort(key=lambda e: cursor_order(e.id))
        if cursor is not None and not allow_gap:
            lost = await asyncio.gather(*(self._trimmed(cursor, read) for read in reads))
            if any(lost):
                assert after is not None
                oldest = events[0] if events else None
                raise HistoryTruncatedError(
                    after, oldest.id if oldest else None, oldest.at if oldest else None
                )
        return events[:limit]

    async def _read_feed(
        self, key: str, cursor: EventCursor | None, limit: int, queue: str | None
    ) -> _FeedRead:
        """The first ``limit`` events of one feed after ``cursor``.

        Reading starts at the cursor's entry itself (its later events are still due).
        Entries hold one to a batch of events, so each read asks for as many entries as
        the events per entry seen so far suggest.
        """
        read = _FeedRead(key, queue)
        out = read.events
        start = "-" if cursor is None else cursor.stream_id
        count = min(limit, _FEED_FIRST_READ)
        entries_seen = events_seen = 0
        while True:
            entries = await self.client.xrange(key, start, "+", count=count)
            for entry_id, fields in entries:
                batch = events_from_entry(entry_id, fields, queue)
                events_seen += len(batch)
                if read.first is None:
                    read.first, read.prev = entry_id, fields.get("p")
                    if cursor is not None:
                        batch = [e for e in batch if cursor_order(e.id) > cursor.order]
                out += batch
                start = f"({entry_id}"
            entries_seen += len(entries)
            if len(out) >= limit or len(entries) < count:
                del out[limit:]
                return read
            per_entry = max(1, events_seen // max(1, entries_seen))
            count = max(1, -(-(limit - len(out)) // per_entry))

    async def _trimmed(self, cursor: EventCursor, read: _FeedRead) -> bool:
        """Whether the feed of ``read`` trimmed an event that comes after ``cursor``.

        The first entry read is the first at or after the cursor's; if it is not the
        cursor's own, the entry before it (its field ``p``, or the feed's last entry when
        nothing was read) is gone, and events after the cursor went with it if it came
        after the cursor's entry, or was that entry and the reader had not all of it.
        """
        own = read.queue == cursor.queue
        if read.first is not None and own and stream_entry(read.first) == cursor.entry:
            return False  # its entry is still held: trimming takes only what is older
        if read.first is not None:
            before = read.prev
        elif self._may_have_trimmed(cursor):
            before = await self.client.get(read.key + ":last")
        else:
            return False
        if before is None or before == "?":  # entries written before `p` was
            return read.first is not None or own
        if before == "":  # the first entry ever written
            return False
        gone = stream_entry(before)
        return gone > cursor.entry or (gone == cursor.entry and not (own and cursor.last))

    def _may_have_trimmed(self, cursor: EventCursor) -> bool:
        """False when ``cursor`` is too young for anything after it to have been trimmed:
        trimming takes only entries older than the retention by the writer's clock (the
        slack covers clocks a little apart). Spares idle feeds a read per poll."""
        horizon = self._local_now() - self.retention.events + _CLOCK_SLACK
        return cursor.entry[0] < horizon * 1000


@dataclass(slots=True)
class _FeedRead:
    """What one read of one feed found: its events, and the first entry read (id and
    field ``p``: the id of the entry written before it)."""

    key: str
    queue: str | None
    events: list[Event] = field(default_factory=list)
    first: str | None = None
    prev: str | None = None


def _group(pairs_: list[tuple[str, str]]) -> dict[str, list[str]]:
    grouped: dict[str, list[str]] = {}
    for queue, job_id in pairs_:
        grouped.setdefault(queue, []).append(job_id)
    return grouped


def _matches(job: Job, filter: JobFilter) -> bool:
    return (
        (filter.status is None or job.status is filter.status)
        and (filter.type is None or job.type == filter.type)
        and (filter.queue is None or job.queue == filter.queue)
    )
