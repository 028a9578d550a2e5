"""The Redis store's lifecycle, producing and consuming (records: ``_records.py``)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from conveyor.backends._common import (
    QUEUE_FULL_RETRY_AFTER,
    accept_new,
    claim_or_give_back,
    encoded_result,
    lease_expired_error,
)
from conveyor.backends.base import EnqueueResult, Outcome, OutcomeKind
from conveyor.backends.redis._base import CONSUMER, GROUP, Call, RedisBase, Route
from conveyor.backends.redis._codec import (
    completion_slots,
    job_from_hash,
    last_lease,
    pairs,
    static_blob,
    time_arg,
)
from conveyor.backends.redis._connect import MAX_BLOCK, check_server, guarded
from conveyor.backends.redis._delivery import DeliveryMixin
from conveyor.backends.redis._lock import LockMixin
from conveyor.backends.redis._queues import QueuesMixin
from conveyor.backends.redis._records import RecordsMixin
from conveyor.backends.redis._schedules import SchedulesMixin
from conveyor.backends.redis._scripts import Arg
from conveyor.backends.redis._workers import WorkersMixin
from conveyor.errors import ConveyorError, QueueFullError
from conveyor.job import Job
from conveyor.serialization import dumps

#: The most due delayed jobs one call moves into the streams.
PROMOTE_CAP = 1000
# Written in place of the attempt count; the fetch script substitutes the real one.
_LEASE_EXPIRED = dumps(lease_expired_error(987654321)).decode()
_KIND = {
    OutcomeKind.COMPLETED: "c",
    OutcomeKind.FAILED: "f",
    OutcomeKind.RETRY: "r",
    OutcomeKind.RELEASED: "x",
}


@dataclass(slots=True)
class _Probe:
    now: float
    expired: int
    soonest: float | None
    wake_id: str
    # (priority, waiting entries, first waiting entry id, its job id)
    levels: list[tuple[int, int, str, str]] = field(default_factory=list)


class RedisBackend(
    LockMixin,
    QueuesMixin,
    WorkersMixin,
    DeliveryMixin,
    RecordsMixin,
    SchedulesMixin,
    RedisBase,
):
    """A :class:`~conveyor.backends.base.Backend` on Redis (or Redis Cluster).

    Args:
        url: ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS) or
            ``unix:///path.sock``; options ``?cluster=1`` and ``?prefix=NAME`` (see
            :class:`~conveyor.backends.redis.RedisOptions`); other query options go to
            redis-py.
        clock: judge time by this clock (seconds since the epoch) instead of the Redis
            server's ``TIME``; for tests. Every process sharing a store must agree.
        retention: how long finished jobs' records (a Redis TTL set when they finish)
            and events (trimmed as the feed is written) are kept. Every process sharing
            a store must agree.

    Raises:
        ConfigurationError: the URL cannot be used.
    """

    def __repr__(self) -> str:
        kind = "cluster" if self.cluster else "server"
        return f"<RedisBackend {kind} prefix={self.options.prefix!r}>"

    # -- lifecycle -------------------------------------------------------------------
    @guarded
    async def open(self) -> None:
        """Connect, load the scripts, check the server's persistence settings and the
        store's marker (``_watch.py``).

        Raises:
            BackendUnavailableError: the server cannot be reached.
        """
        client = self.client
        await client.ping()
        for script in self.scripts.values():
            await client.script_load(script.source)
        await check_server(client, self.options.url)
        await self._watch.check(client)

    async def aclose(self) -> None:
        if self._closed:
            return
        self._closed = True
        dangling = list(self._dangling)
        for task in dangling:
            task.cancel()
        # Let cancelled reads give their connections back before the pool closes.
        await asyncio.gather(*dangling, return_exceptions=True)
        client, self._client = self._client, None
        if client is not None:
            with contextlib.suppress(Exception):  # closing a broken connection
                await client.aclose()

    @guarded
    async def ping(self) -> None:
        await self.client.ping()

    # -- producing -------------------------------------------------------------------
    @guarded
    async def enqueue(self, jobs: Sequence[Job], *, idempotency_ttl: float) -> list[EnqueueResult]:
        if not jobs:
            return []
        by_queue: dict[str, list[int]] = {}
        for i, job in enumerate(jobs):
            by_queue.setdefault(job.queue, []).append(i)
        for idx in by_queue.values():  # the script's order: by priority level
            idx.sort(key=lambda i: jobs[i].priority)
        now_arg = self._now_arg()
        batches = {q: [jobs[i] for i in idx] for q, idx in by_queue.items()}
        if len(batches) > 1:
            # Several queues, several scripts: check every queue's room first, so that a
            # full queue refuses the whole batch before anything is stored.
            checks = [
                self._enqueue_call(q, b, idempotency_ttl, now_arg, "check")
                for q, b in batches.items()
            ]
            for queue, answer in zip(batches, await self._run(checks), strict=True):
                if answer[0] == "FULL":
                    raise QueueFullError(queue, QUEUE_FULL_RETRY_AFTER)
        calls = [self._enqueue_call(q, b, idempotency_ttl, now_arg) for q, b in batches.items()]
        pipe = self.client.pipeline(transaction=False)
        if self.cluster:
            # Before the scripts: a job is never stored without its route. (Routes
            # spread over slots: one SET each.)
            for job in jobs:
                pipe.set(self._g.route(job.id), f"{job.priority}:{job.queue}")
        new_queues = [q for q in by_queue if q not in self._seen]
        if new_queues:
            pipe.sadd(self._g.queues, *new_queues)
        if self.cluster:
            await pipe.execute()
            script_answers = await self._run(calls)
        else:
            for script, keys, args in calls:
                script.queue(pipe, keys, args)
            answers = await pipe.execute(raise_on_error=False)
            extra = 1 if new_queues else 0
            for answer in answers[:extra]:
                if isinstance(answer, Exception):
                    raise answer
            script_answers = answers[extra:]
            for i, answer in enumerate(script_answers):
                if isinstance(answer, Exception):  # NOSCRIPT: it did not run
                    script, keys, args = calls[i]
                    script_answers[i] = await script(self.client, keys, args)
        self._seen.update(new_queues)
        full = [
            q for q, answer in zip(by_queue, script_answers, strict=True) if answer[0] == "FULL"
        ]
        if full:
            await self._refuse(full[0], jobs, by_queue, script_answers)

        results: list[EnqueueResult | None] = [None] * len(jobs)
        unused: list[str] = []
        for (queue, idx), (now_s, outs) in zip(by_queue.items(), script_answers, strict=True):
            now = float(now_s)
            for i, out in zip(idx, outs, strict=True):
                job = jobs[i]
                if out == 1:
                    stored = accept_new(job, now)
                    self._remember(job.id, (queue, job.priority))
                    results[i] = EnqueueResult(stored, True)
                else:
                    unused.append(job.id)
                    results[i] = EnqueueResult(job_from_hash(out[0], pairs(out[1])), False)
        if unused and self.cluster:  # idempotency hits: the routes written lead nowhere
            await self._delete_each([self._g.route(i) for i in unused])
        return [r for r in results if r is not None]

    async def _refuse(
        self,
        queue: str,
        jobs: Sequence[Job],
        by_queue: dict[str, list[int]],
        answers: list[Any],
    ) -> None:
        """A queue was full: undo the rest of the batch (only another queue's part that
        was stored after the check, in a race with a concurrent submit) and refuse it."""
        stored: list[str] = []
        for (_, idx), answer in zip(by_queue.items(), answers, strict=True):
            if answer[0] != "FULL":
                stored += [jobs[i].id for i, out in zip(idx, answer[1], strict=True) if out == 1]
        for job_id in stored:
            with contextlib.suppress(ConveyorError):
                await self.cancel(job_id)
        kept = set(stored)
        if self.cluster:
            await self._delete_each([self._g.route(job.id) for job in jobs if job.id not in kept])
        raise QueueFullError(queue, QUEUE_FULL_RETRY_AFTER)

    def _enqueue_call(
        self, queue: str, jobs: list[Job], ttl: float, now_arg: str, mode: str = ""
    ) -> Call:
        k = self.keys(queue)
        prios = sorted({job.priority for job in jobs})
        keys = [k.prios, k.delayed, k.pending, k.events, k.wake, k.conf]
        level_args: list[Arg] = []
        for prio in prios:
            keys.append(k.stream(prio))
            level_args += [prio, len(keys)]
        # One argument for the whole batch (see ``_complete_call``), each job with only
        # the values that are not the default.
        by_level: dict[int, list[list[str]]] = {prio: [] for prio in prios}
        for job in jobs:  # (sorted by priority by the caller)
            item = [job.id, static_blob(job)]
            run_at = time_arg(job.run_at) if job.run_at else ""
            created_at = time_arg(job.created_at) if job.created_at else ""
            idem_index = 0
            if job.idempotency_key is not None:
                keys.append(k.idempotency(job.idempotency_key))
                idem_index = len(keys)
            if run_at or created_at or idem_index:
                item += [run_at, created_at, str(idem_index)]
            by_level[job.priority].append(item)
        args: list[Arg] = [
            now_arg,
            k.job_prefix,
            GROUP,
            queue,
            repr(float(ttl)),
            max(1, int(ttl * 1000)),
            mode,
            len(prios),
            *level_args,
            dumps(list(by_level.values())).decode(),
            dumps([[job.id, job.type] for job in jobs]).decode(),
        ]
        return self.scripts["enqueue"], keys, args

    async def _delete_each(self, keys: Sequence[str]) -> None:
        pipe = self.client.pipeline(transaction=False)
        for key in keys:
            pipe.delete(key)
        await pipe.execute()

    # -- consuming -------------------------------------------------------------------
    async def fetch(
        self, queues: Sequence[str], worker_id: str, limit: int, lease_seconds: float
    ) -> list[Job]:
        if limit <= 0 or not queues:
            return []
        claim = asyncio.ensure_future(
            self._fetch(list(dict.fromkeys(queues)), worker_id, limit, lease_seconds)
        )
        return await claim_or_give_back(claim, worker_id, self._complete_in_background)

    def _complete_in_background(self, outcomes: list[Outcome]) -> None:
        self._in_background(self.complete(outcomes))

    @guarded
    async def _fetch(
        self, queues: list[str], worker_id: str, limit: int, lease_seconds: float
    ) -> list[Job]:
        now_arg = self._now_arg()
        if len(queues) == 1:
            plan: dict[str, tuple[int, dict[int, int] | None]] = {queues[0]: (limit, None)}
        else:
            plan = self._plan(queues, await self._probe(queues, now_arg), limit)
        if not plan:
            return []

        def build(queue: str) -> Call:
            quota, quotas = plan[queue]
            return self._fetch_call(queue, worker_id, quota, lease_seconds, quotas, now_arg)

        answers = await self._run_per_queue(list(plan), build)
        leased: list[tuple[tuple[int, int, str], Job]] = []
        dead: list[tuple[str, str]] = []
        for queue, (_, now_s, outs, dead_ids, deadline_s, token) in answers.items():
            deadline = float(deadline_s)
            for n in range(0, len(outs), 3):
                job_id, prio, read = outs[n : n + 3]
                _, entry, lease, static, created, run_at, progress, error, webhook = read
                # Read before the lease: apply what the script set.
                fields = {
                    "q": queue,
                    "pr": prio,
                    "d": static,
                    "ca": created,
                    "s": "running",
                    "l": f"{last_lease(lease)[0] + 1} {now_s} {token}",
                    "x": entry,
                }
                optional = {"r": run_at, "p": progress, "e": error, "wh": webhook}
                fields.update((name, value) for name, value in optional.items() if value)
                job = job_from_hash(job_id, fields, deadline)
                self._remember(job_id, (queue, job.priority))
                self._hold(job_id, (worker_id, job.attempts, token, job.type))
                leased.append(((-job.priority, _entry_ms(entry), job_id), job))
            dead += [(job_id, queue) for job_id in dead_ids]
        if dead and self.cluster:  # dead-lettered foreign entries: routes to their records
            pipe = self.client.pipeline(transaction=False)
            for job_id, queue in dead:
                pipe.set(self._g.route(job_id), f"0:{queue}")
            await pipe.execute()
        if len(answers) > 1:
            # Several queues: highest priority first, then the oldest stream entry.
            leased.sort(key=lambda pair: pair[0])
        return [job for _, job in leased]

    def _fetch_call(
        self,
        queue: str,
        worker_id: str,
        limit: int,
        lease_seconds: float,
        quotas: dict[int, int] | None,
        now_arg: str,
    ) -> Call:
        k = self.keys(queue)
        keys = [k.prios, k.delayed, k.leases, k.pending, k.failed, k.events, k.conf]
        levels = self._levels.get(queue, [])
        level_args: list[Arg] = []
        for prio in levels:
            keys.append(k.stream(prio))
            quota = -1 if quotas is None else quotas.get(prio, 0)
            level_args += [prio, len(keys), quota]
        reclaim = -1 if quotas is None else quotas.get(_RECLAIM, 0)
        args: list[Arg] = [
            now_arg,
            k.job_prefix,
            GROUP,
            CONSUMER,
            worker_id,
            limit,
            repr(float(lease_seconds)),
            self._ttl_ms(),
            _LEASE_EXPIRED,
            reclaim,
            PROMOTE_CAP,
            queue,
            len(levels),
            *level_args,
        ]
        return self.scripts["fetch"], keys, args

    def _plan(
        self, queues: list[str], probes: dict[str, _Probe], limit: int
    ) -> dict[str, tuple[int, dict[int, int] | None]]:
        """Split ``limit`` over several queues: expired leases first, then the highest
        priority levels across queues, oldest waiting entry first among equals."""
        left = limit
        quotas: dict[str, dict[int, int]] = {q: {} for q in queues}
        for queue in queues:
            take = min(probes[queue].expired, left)
            if take:
                quotas[queue][_RECLAIM] = take
                left -= take
        candidates = sorted(
            (-prio, _entry_ms(entry), job_id, order, queue, waiting)
            for order, queue in enumerate(queues)
            for prio, waiting, entry, job_id in probes[queue].levels
        )
        for neg_prio, _, _, _, queue, waiting in candidates:
            if left <= 0:
                break
            take = min(waiting, left)
            quotas[queue][-neg_prio] = take
            left -= take
        return {q: (sum(qs.values()), qs) for q, qs in quotas.items() if qs}

    async def _probe(self, queues: Sequence[str], now_arg: str) -> dict[str, _Probe]:
        def build(queue: str) -> Call:
            k = self.keys(queue)
            streams, level_args = self._level_keys(queue, 6)
            keys = [k.prios, k.delayed, k.leases, k.wake, k.conf, *streams]
            args: list[Arg] = [now_arg, k.job_prefix, PROMOTE_CAP, len(streams), *level_args]
            return self.scripts["probe"], keys, args

        out: dict[str, _Probe] = {}
        for queue, answer in (await self._run_per_queue(queues, build)).items():
            _, now_s, expired, delayed, lease, wake_id, levels = answer
            times = [float(t) for t in (delayed, lease) if t != ""]
            out[queue] = _Probe(
                now=float(now_s),
                expired=int(expired),
                soonest=min(times) if times else None,
                wake_id=wake_id,
                levels=[(int(p), int(n), e, j) for p, n, e, j in levels],
            )
        return out

    @guarded
    async def renew(
        self, worker_id: str, leases: Mapping[str, int], lease_seconds: float
    ) -> set[str]:
        if not leases:
            return set()
        routes = await self._resolve(leases)
        lost = {job_id for job_id in leases if job_id not in routes}
        by_queue: dict[str, list[str]] = {}
        for job_id, (queue, _) in routes.items():
            by_queue.setdefault(queue, []).append(job_id)
        now_arg = self._now_arg()
        calls: list[Call] = []
        for queue, ids in by_queue.items():
            k = self.keys(queue)
            keys = [k.leases]
            args: list[Arg] = [now_arg, worker_id, repr(float(lease_seconds))]
            for job_id in ids:
                keys.append(k.job(job_id))
                args += [job_id, len(keys), leases[job_id]]
            calls.append((self.scripts["renew"], keys, args))
        for ids, positions in zip(by_queue.values(), await self._run(calls), strict=True):
            lost.update(ids[p] for p in positions)
        return lost

    @guarded
    async def complete(self, outcomes: Sequence[Outcome]) -> list[bool]:
        if not outcomes:
            return []
        routes = await self._resolve(o.job_id for o in outcomes)
        by_queue: dict[str, list[int]] = {}
        for i, outcome in enumerate(outcomes):
            route = routes.get(outcome.job_id)
            if route is not None:
                by_queue.setdefault(route[0], []).append(i)
        now_arg = self._now_arg()
        plans = [
            self._complete_call(q, [(i, outcomes[i]) for i in idx], routes, now_arg)
            for q, idx in by_queue.items()
        ]
        flags = [False] * len(outcomes)
        answers = await self._run([call for call, _ in plans])
        for (_, order), answer in zip(plans, answers, strict=True):
            for i, flag in zip(order, answer, strict=True):
                flags[i] = flag == "1"
        for o in outcomes:  # answered: that attempt is over either way
            if self._held_for(o) is not None:
                del self._held[o.job_id]
        self._forget(
            o.job_id
            for o, ok in zip(outcomes, flags, strict=True)
            if ok and o.kind in (OutcomeKind.COMPLETED, OutcomeKind.FAILED)
        )
        return flags

    def _complete_call(
        self,
        queue: str,
        outcomes: list[tuple[int, Outcome]],
        routes: dict[str, Route],
        now_arg: str,
    ) -> tuple[Call, list[int]]:
        """The ``complete`` call for one queue's outcomes, and the positions (in
        ``outcomes``' numbering) of the flags it answers, in its order."""
        k = self.keys(queue)
        keys = [k.leases, k.delayed, k.pending, k.completed, k.failed, k.events, k.wake]
        index: dict[str, int] = {}

        def key_index(key: str) -> int:
            if key not in index:
                keys.append(key)
                index[key] = len(keys)
            return index[key]

        # Grouped by lease token, each outcome with only the values the script uses;
        # the events go in a second argument, which the script stores without decoding.
        # (One argument each for the whole batch: per-job arguments would cost the
        # server an object each and redis-py a pure-Python encoding each.)
        groups: dict[tuple[str, str], list[tuple[int, list[str], list[Any]]]] = {}
        for i, o in outcomes:
            kind = _KIND[o.kind]
            result = event_result = "null"
            error = event_error = dumps(o.error).decode()
            if kind == "c":
                encoded = encoded_result(o)  # the worker's bytes: not encoded again
                result = encoded.decode()
                event_result, event_error = completion_slots(result, len(encoded))
            retry_at = "" if o.retry_at is None else time_arg(o.retry_at)
            # The token of the attempt this process fetched, if this outcome is about it
            # (another attempt's outcome is fenced by the record).
            held = self._held_for(o)
            token, task_type = ("", "") if held is None else held[2:]
            value = {"c": result, "x": ""}.get(kind, error)  # what the record keeps
            item = [o.job_id, kind, value]
            if kind in ("r", "x") or not token:
                stream = key_index(k.stream(routes[o.job_id][1]))
                item += [str(o.attempt), retry_at, str(stream)]
            event = [o.job_id, o.attempt, kind, event_result, event_error, retry_at, task_type]
            group = groups.setdefault((token, "" if token else o.worker_id), [])
            group.append((i, item, event))
        order: list[int] = []
        packed: list[list[Any]] = []
        events: list[list[Any]] = []
        for (token, owner), members in groups.items():
            packed.append([token, owner, [item for _, item, _ in members]])
            order += [i for i, _, _ in members]
            events += [event for _, _, event in members]
        args: list[Arg] = [
            now_arg,
            self._ttl_ms(),
            k.job_prefix,
            queue,
            dumps(packed).decode(),
            dumps(events).decode(),
        ]
        return (self.scripts["complete"], keys, args), order

    @guarded
    async def set_progress(self, job_id: str, attempt: int, progress: int) -> bool:
        route = (await self._resolve([job_id])).get(job_id)
        if route is None:
            return False
        k = self.keys(route[0])
        args: list[Arg] = [self._now_arg(), job_id, attempt, int(progress)]
        return bool(await self.scripts["progress"](self.client, [k.job(job_id), k.events], args))

    @guarded
    async def wait_for_work(self, queues: Sequence[str], timeout: float) -> None:
        """Return when a job in ``queues`` may be fetchable, or after ``timeout`` seconds.

        Wakes on any enqueue or requeue (each appends to the queue's ``wake`` stream,
        read here with ``XREAD BLOCK``), and at the next delayed job's due time or lease
        expiry, judged by the store's clock.
        """
        names = list(dict.fromkeys(queues))
        if not names:
            await asyncio.sleep(max(0.0, timeout))
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + max(0.0, timeout)
        probes = await self._probe(names, self._now_arg())
        if any(p.expired or p.levels for p in probes.values()):
            return
        wait = deadline - loop.time()
        for probe in probes.values():
            if probe.soonest is not None:
                wait = min(wait, probe.soonest - probe.now)
        if wait <= 0:
            return
        ids = {self.keys(q).wake: p.wake_id for q, p in probes.items()}
        await self._block(ids, wait)

    async def _block(self, ids: dict[str, str], wait: float) -> None:
        # Redis checks blocking timeouts only every 1/hz s (100 ms by default), too coarse
        # for due times: the local timer decides, and a read still blocked when it fires
        # is left to finish on its own (within ~100 ms) instead of being cancelled, which
        # would cost its connection.
        groups = [ids] if not self.cluster else [{key: value} for key, value in ids.items()]
        block_ms = int(min(wait, MAX_BLOCK) * 1000) + 100
        reads = [
            asyncio.ensure_future(self.client.xread(group, count=1, block=block_ms))
            for group in groups
        ]
        try:
            done, _ = await asyncio.wait(
                reads, timeout=min(wait, MAX_BLOCK), return_when=asyncio.FIRST_COMPLETED
            )
        except asyncio.CancelledError:
            for read in reads:  # the caller is leaving (worker stopping): stop reading too
                read.cancel()
            raise
        finally:
            for read in reads:
                if read.done():
                    self._settle(read)
                else:
                    self._dangling.add(read)
                    read.add_done_callback(self._settle)
        for read in done:
            read.result()  # a connection error surfaces here


_RECLAIM = -(2**62)  # quota key for expired leases in a fetch plan


def _entry_ms(entry: str) -> int:
    ms, _, _ = entry.partition("-")
    return int(ms) if ms.isdigit() else 0
