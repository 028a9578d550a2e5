"""State and helpers shared by the parts of :class:`RedisBackend`."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping, Sequence
from typing import Any

from conveyor.backends.base import Outcome, Retention
from conveyor.backends.redis._codec import time_arg
from conveyor.backends.redis._connect import guarded
from conveyor.backends.redis._keys import (
    GlobalKeys,
    QueueKeys,
    RedisOptions,
    display_url,
    parse_redis_url,
)
from conveyor.backends.redis._scripts import Arg, Script, run_pipeline, scripts_for
from conveyor.backends.redis._watch import StoreWatch, watch_for
from conveyor.errors import BackendUnavailableError, ConfigurationError

logger = logging.getLogger(__name__)

#: The consumer group of every work stream, and its one consumer. Streams are read with
#: NOACK: who holds a job is its lease (token, owner, attempt), not the pending list.
GROUP = "conveyor"
CONSUMER = "conveyor"

Route = tuple[str, int]  # (queue, priority): immutable for a job's whole life
Call = tuple[Script, Sequence[str], Sequence[Arg]]

_MAX_ROUTES = 200_000
_routes_lock = threading.Lock()
# Per store, shared by every instance in the process: the heartbeat thread's instance
# renews jobs the worker's instance fetched without a lookup round trip.
_ROUTES: dict[str, dict[str, Route]] = {}
_QUEUES_SEEN: dict[str, set[str]] = {}
# Per store: job id -> (owner, attempt, lease token, task type) of the attempts this
# process fetched last, so their outcomes are fenced by token without reading records.
Held = tuple[str, int, str, str]
_HELD: dict[str, dict[str, Held]] = {}


class RedisBase:
    """Connection, clock, key names and caches of one backend instance."""

    def __init__(
        self,
        url: str,
        *,
        clock: Callable[[], float] | None = None,
        retention: Retention | None = None,
    ) -> None:
        self.url = url
        self.options: RedisOptions = parse_redis_url(url)
        self.retention = retention or Retention()
        _check_url_ttl(self.options, self.retention)
        self.scripts: Mapping[str, Script] = scripts_for(self.retention.events)
        self._clock = clock
        self._client: Any = None
        self._closed = False
        # Background reads left to finish on their own (see RedisBackend._block).
        self._dangling: set[asyncio.Task[Any]] = set()
        self.cluster = self.options.cluster
        self._g = GlobalKeys(self.options.prefix)
        self._queue_keys: dict[str, QueueKeys] = {}
        self._levels: dict[str, list[int]] = {}  # ascending priority levels per queue
        store = f"{self.options.url}|{self.options.prefix}"
        with _routes_lock:
            self._routes = _ROUTES.setdefault(store, {})
            self._seen = _QUEUES_SEEN.setdefault(store, set())
            self._held = _HELD.setdefault(store, {})
        self._watch: StoreWatch = watch_for(
            store, self._g.marker, display_url(self.options.url), self.cluster
        )

    # -- plumbing --------------------------------------------------------------------
    @property
    def client(self) -> Any:
        """The redis-py client, built on first use. A use may also start, in the
        background, the periodic check that the server kept the store's data
        (``_watch.py``): piggybacked on the calls a process makes anyway."""
        if self._closed:
            raise BackendUnavailableError(f"Redis store {display_url(self.options.url)} is closed")
        if self._client is None:
            from conveyor.backends.redis._connect import make_client

            self._client = make_client(self.options)
        if self._watch.due():
            self._in_background(self._watch.check(self._client))
        return self._client

    def _in_background(self, work: Coroutine[Any, Any, Any]) -> None:
        """Run ``work`` without waiting for it; :meth:`aclose` cancels what is left."""
        task = asyncio.ensure_future(work)
        self._dangling.add(task)
        task.add_done_callback(self._settle)

    def _settle(self, task: asyncio.Task[Any]) -> None:
        self._dangling.discard(task)
        if not task.cancelled():
            task.exception()  # retrieved: a failed background call is not worth a warning

    def _now_arg(self) -> str:
        """ARGV[1] of every script: the injected clock's time, or "" for Redis TIME."""
        return "" if self._clock is None else time_arg(self._clock())

    @guarded
    async def now(self) -> float:
        """The store's clock: the injected one, else the Redis server's ``TIME``."""
        if self._clock is not None:
            return float(self._clock())
        seconds, micros = await self.client.time()
        return float(seconds) + float(micros) / 1e6

    def _local_now(self) -> float:
        return self._clock() if self._clock is not None else time.time()

    def _ttl_ms(self) -> int:
        """The Redis TTL of a finished job's record, set when it finishes."""
        return max(1, int(self.retention.result_ttl * 1000))

    def keys(self, queue: str) -> QueueKeys:
        keys = self._queue_keys.get(queue)
        if keys is None:
            if self.cluster:
                keys = QueueKeys(self.options.prefix, queue)
            else:
                keys = QueueKeys(self.options.prefix, queue, self._g.events, self._g.jobs)
            self._queue_keys[queue] = keys
        return keys

    async def _run(self, calls: Sequence[Call]) -> list[Any]:
        """Script calls in one round trip (on a cluster: concurrently, one per node's
        connection, as redis-py refuses EVALSHA in cluster pipelines)."""
        if self.cluster and len(calls) > 1:
            client = self.client
            return list(await asyncio.gather(*(s(client, k, a) for s, k, a in calls)))
        return await run_pipeline(self.client, calls)

    # -- routes: job id -> (queue, priority) -----------------------------------------
    def _remember(self, job_id: str, route: Route) -> None:
        if len(self._routes) >= _MAX_ROUTES:
            with _routes_lock:
                self._routes.clear()  # a cache: lookups refill what is still needed
        self._routes[job_id] = route

    def _forget(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            self._routes.pop(job_id, None)

    def _hold(self, job_id: str, held: Held) -> None:
        if len(self._held) >= _MAX_ROUTES:
            with _routes_lock:
                self._held.clear()  # outcomes without a token are fenced by the record
        self._held[job_id] = held

    def _held_for(self, outcome: Outcome) -> Held | None:
        """The lease of ``outcome``'s attempt, if this process fetched that attempt."""
        held = self._held.get(outcome.job_id)
        if held is None or held[:2] != (outcome.worker_id, outcome.attempt):
            return None
        return held

    async def _resolve(self, job_ids: Iterable[str]) -> dict[str, Route]:
        """Routes of jobs; unknown ids (never stored, or purged) are left out."""
        found: dict[str, Route] = {}
        missing: list[str] = []
        for job_id in dict.fromkeys(job_ids):
            route = self._routes.get(job_id)
            if route is None:
                missing.append(job_id)
            else:
                found[job_id] = route
        if missing:
            # A cluster keeps routes (records are keyed by queue); a single server finds
            # the record by id and reads its queue and priority.
            pipe = self.client.pipeline(transaction=False)
            for job_id in missing:
                if self.cluster:
                    pipe.get(self._g.route(job_id))
                else:
                    pipe.hmget(self._g.jobs + job_id, "pr", "q")
            for job_id, value in zip(missing, await pipe.execute(), strict=True):
                if self.cluster:
                    prio, _, queue = (value or "").partition(":")
                else:
                    prio, queue = value
                if prio and queue is not None and prio.lstrip("-").isdigit():
                    route = (queue, int(prio))
                    found[job_id] = route
                    self._remember(job_id, route)
        return found

    # -- priority levels -------------------------------------------------------------
    def _level_keys(self, queue: str, first_index: int) -> tuple[list[str], list[Arg]]:
        """Stream keys of the queue's known levels and their (priority, KEYS index) ARGV
        pairs; ``first_index`` is the 1-based KEYS position of the first stream."""
        keys = self.keys(queue)
        levels = self._levels.get(queue, [])
        args: list[Arg] = []
        for i, prio in enumerate(levels):
            args += [prio, first_index + i]
        return [keys.stream(p) for p in levels], args

    def _stale(self, queue: str, result: Any) -> bool:
        """True (and the cache updated) when a script refused a stale level list."""
        if isinstance(result, list) and result and result[0] == "STALE":
            self._levels[queue] = sorted(int(p) for p in result[1])
            return True
        return False

    async def _run_per_queue(
        self, queues: Sequence[str], build: Callable[[str], Call]
    ) -> dict[str, Any]:
        """Run one leveled script per queue in one round trip, repeating the calls of
        queues whose level list was stale."""
        results: dict[str, Any] = {}
        todo = list(queues)
        for _ in range(5):
            answers = await self._run([build(q) for q in todo])
            stale: list[str] = []
            for queue, answer in zip(todo, answers, strict=True):
                if self._stale(queue, answer):
                    stale.append(queue)
                else:
                    results[queue] = answer
            todo = stale
            if not todo:
                return results
        raise BackendUnavailableError("priority levels kept changing; try again")


def _check_url_ttl(options: RedisOptions, retention: Retention) -> None:
    """``?result_ttl=`` of older versions: accepted while it agrees with the setting.

    Raises:
        ConfigurationError: it says otherwise (one retention for every process).
    """
    if options.result_ttl is None:
        return
    if options.result_ttl != retention.result_ttl:
        raise ConfigurationError(
            f"the store URL says result_ttl={options.result_ttl:g} but the result "
            f"retention is {retention.result_ttl:g} s: set CONVEYOR_RESULT_TTL_SECONDS "
            "(the same for every process) and drop ?result_ttl= from the URL"
        )
    logger.warning(
        "?result_ttl= in the Redis URL is deprecated and will be refused: "
        "CONVEYOR_RESULT_TTL_SECONDS sets the retention of finished jobs"
    )
