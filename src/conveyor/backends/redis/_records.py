"""Job records, listings, cancel/retry, purge, counts and the event feed."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from conveyor.backends.base import Event, JobFilter, JobPage, QueueStats
from conveyor.backends.redis._base import Call, RedisBase
from conveyor.backends.redis._codec import (
    events_from_entry,
    job_from_hash,
    last_lease,
    pairs,
    parse_event_id,
)
from conveyor.backends.redis._connect import guarded
from conveyor.backends.redis._scripts import SCRIPTS, Arg
from conveyor.errors import ConflictError, JobNotFoundError
from conveyor.job import Job, JobStatus

#: The most expired jobs one purge call removes per queue and round.
PURGE_CAP = 1000
_LIST_CHUNK = 50
#: Entries asked for by the first read of the event feed (each holds 1 to 1,000 events).
_FEED_FIRST_READ = 16


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

    async def _load(self, queue: str, ids: list[str]) -> list[Job]:
        k = self.keys(queue)
        pipe = self.client.pipeline(transaction=False)
        for job_id in ids:
            pipe.hgetall(k.job(job_id))
        rows: list[dict[str, str]] = await pipe.execute()
        # A running job's lease deadline is the score of its token.
        tokens = [last_lease(row.get("l"))[2] if row.get("s") == "running" else "" for row in rows]
        deadlines: dict[str, float] = {}
        if any(tokens):
            ordered = sorted({t for t in tokens if t})
            scores = await self.client.zmscore(k.leases, ordered)
            deadlines = {t: d for t, d in zip(ordered, scores, strict=True) if d is not None}
        return [
            job_from_hash(i, row, deadlines.get(token))
            for i, row, token in zip(ids, rows, tokens, strict=True)
            if row
        ]

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
                loaded = {job.id: job for job in await self._load(queue, ids)}
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
        return self._answer(job_id, await SCRIPTS["cancel"](self.client, keys, args), "cancel")

    @guarded
    async def retry(self, job_id: str) -> Job:
        route = (await self._resolve([job_id])).get(job_id)
        if route is None:
            raise JobNotFoundError(job_id)
        k = self.keys(route[0])
        keys = [k.job(job_id), k.pending, k.failed, k.cancelled, k.events, k.wake]
        keys.append(k.stream(route[1]))
        answer = await SCRIPTS["retry"](self.client, keys, [self._now_arg(), job_id])
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
    async def purge(self, result_ttl: float) -> int:
        """Delete finished jobs older than ``result_ttl`` (and, on a cluster, their routes).

        Records of finished jobs also carry a Redis TTL (the latest ``result_ttl`` seen
        here, else the URL's), so memory stays bounded even when nobody purges; this call
        judges age by the store's clock and cleans the indexes.
        """
        self._result_ttl = result_ttl
        deleted = 0
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
                calls.append((SCRIPTS["purge"], keys, args))
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

    @guarded
    async def queue_stats(self) -> list[QueueStats]:
        queues = await self._queues()
        now_arg = self._now_arg()
        calls: list[Call] = []
        for queue in queues:
            k = self.keys(queue)
            keys = [k.pending, k.delayed, k.leases, k.completed, k.failed, k.cancelled, k.conf]
            calls.append((SCRIPTS["stats"], keys, [now_arg]))
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
    async def read_events(self, after: str | None, limit: int) -> list[Event]:
        if limit <= 0:
            return []
        start = "-" if not after else parse_event_id(after)[0]
        if not self.cluster:
            return await self._read_feed(self._g.events, start, after, limit, None)
        # One feed per queue (a script may only touch its queue's slot): merged here by
        # event id (stream id, index, queue). Streams of different queues get their ids
        # from different servers' clocks, so across queues the order is by time only to
        # within clock skew; within a queue it is exact.
        queues = await self._queues()
        feeds = await asyncio.gather(
            *(self._read_feed(self.keys(q).events, start, after, limit, q) for q in queues)
        )
        events = sorted((e for feed in feeds for e in feed), key=lambda e: e.id)
        return events[:limit]

    async def _read_feed(
        self, key: str, start: str, after: str | None, limit: int, queue: str | None
    ) -> list[Event]:
        """The first ``limit`` events of one feed with ids above ``after``.

        Reading starts at the cursor's entry itself (its later events are still due).
        Entries hold one to a batch of events, so each read asks for as many entries as
        the events per entry seen so far suggest.
        """
        out: list[Event] = []
        count = min(limit, _FEED_FIRST_READ)
        entries_seen = events_seen = 0
        while True:
            entries = await self.client.xrange(key, start, "+", count=count)
            for entry_id, fields in entries:
                batch = events_from_entry(entry_id, fields, queue)
                events_seen += len(batch)
                out += batch if after is None else [e for e in batch if e.id > after]
                start = f"({entry_id}"
            entries_seen += len(entries)
            if len(out) >= limit or len(entries) < count:
                return out[:limit]
            per_entry = max(1, events_seen // max(1, entries_seen))
            count = max(1, -(-(limit - len(out)) // per_entry))


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
