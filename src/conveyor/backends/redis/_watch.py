"""Noticing that the Redis server behind a store lost its data.

A Redis that restarts without persistence (or is flushed, or fails over to an empty
replica) answers again as if nothing happened: only its ``INFO`` says it started anew.
So each store has a marker, ``<prefix>:marker``, written once (``SET NX``) by the first
process that opens it and never changed. Each process remembers the marker's value and
the server's ``run_id``, and reads both again when it opens the store and then at most
every :data:`INTERVAL` seconds, in the background of the store calls it makes anyway:

- the marker is gone, or another process wrote a new one: the data is lost. An ERROR,
  once per process and loss, and the marker is written again;
- the marker is there but ``run_id`` changed: a restart or failover that kept the data,
  a WARNING.

On a cluster only the marker is read: it lives on one node, so the loss of another
node's data goes unnoticed (``run_id`` differs per node and is not compared).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from typing import Any

from redis.exceptions import RedisError

logger = logging.getLogger("conveyor.backends.redis")

#: The longest time between two checks of a store by one process (while it uses it).
INTERVAL = 2.0

_lock = threading.Lock()
# Per store (URL and prefix), shared by every instance in the process: one check per
# interval, and one ERROR per loss, whichever instance or thread notices it first.
_WATCHES: dict[str, StoreWatch] = {}


def _when(ts: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(ts))


class StoreWatch:
    """What one process last saw of one store's marker and server.

    Args:
        key: the marker's key.
        url: the store's URL as logs show it (no password).
        cluster: the store is a Redis Cluster (no ``run_id`` to compare).
    """

    def __init__(self, key: str, url: str, cluster: bool) -> None:
        self.key = key
        self.url = url
        self.cluster = cluster
        self._seen: str | None = None  # the marker's value as last read or written
        self._run_id: str | None = None
        self._intact_at = 0.0  # when the marker was last seen where it should be
        self._writing = False  # a loss was reported; the new marker is not stored yet
        self._next = time.monotonic() + INTERVAL

    def due(self) -> bool:
        """True when a check is due; the caller then runs :meth:`check` (no other
        caller is told so until the next interval)."""
        now = time.monotonic()
        if now < self._next:  # read without the lock (hot path): at worst a check waits
            return False
        with _lock:
            if now < self._next:
                return False
            self._next = now + INTERVAL
            return True

    async def check(self, client: Any) -> None:
        """Read the marker and ``run_id``, log a loss or a restart, repair the marker.

        A server that does not answer is left for a later check.
        """
        try:
            marker, run_id = await self._read(client)
            value = self._judge(marker, run_id)
            if value is not None:
                stored = await client.set(self.key, value, nx=True, get=True)
                self._stored(stored or value)
        except (RedisError, OSError) as exc:
            logger.debug("checking the marker of %s failed: %s", self.url, exc)

    async def _read(self, client: Any) -> tuple[str | None, str | None]:
        if self.cluster:
            return await client.get(self.key), None
        pipe = client.pipeline(transaction=False)
        pipe.get(self.key)
        pipe.info("server")
        marker, info = await pipe.execute(raise_on_error=False)
        if isinstance(marker, Exception):
            raise marker
        # INFO may be renamed or denied (managed Redis): then the marker alone decides.
        run_id = info.get("run_id") if isinstance(info, dict) else None
        return marker, None if run_id is None else str(run_id)

    def _judge(self, marker: str | None, run_id: str | None) -> str | None:
        """Compare with what was seen; the marker value to write, if one must be."""
        with _lock:
            previous_run, self._run_id = self._run_id, run_id or self._run_id
            restarted = None not in (run_id, previous_run) and run_id != previous_run
            if marker is not None and marker == self._seen:
                self._adopt(marker)
                if restarted:
                    logger.warning(
                        "Redis at %s restarted or failed over (run_id %s, was %s) and "
                        "kept its data",
                        self.url,
                        run_id,
                        previous_run,
                    )
                return None
            if self._seen is not None and not self._writing:
                self._report_loss(restarted)
            elif marker is None and self._seen is not None:
                return self._seen  # reported already: store the new marker again
            if marker is not None:  # this process's first look, or written anew elsewhere
                self._adopt(marker)
                return None
            # Never marked (a new store, or one written before markers), or lost.
            self._seen, self._writing = f"{_when(time.time())} {uuid.uuid4().hex}", True
            return self._seen

    def _adopt(self, marker: str) -> None:
        self._seen, self._writing, self._intact_at = marker, False, time.time()

    def _report_loss(self, restarted: bool) -> None:
        cause = "restarted without persistence?" if restarted else "flushed, or restarted?"
        logger.error(
            "Redis at %s lost its data (%s): jobs acknowledged before %s are gone (and "
            "any acknowledged since, up to the loss), with their results, schedules and "
            "events; the store goes on empty",
            self.url,
            cause,
            _when(self._intact_at),
        )

    def _stored(self, value: str) -> None:
        with _lock:
            self._adopt(value)


def watch_for(store: str, key: str, url: str, cluster: bool) -> StoreWatch:
    """The process's one :class:`StoreWatch` of ``store``."""
    with _lock:
        watch = _WATCHES.get(store)
        if watch is None:
            watch = _WATCHES[store] = StoreWatch(key, url, cluster)
        return watch
