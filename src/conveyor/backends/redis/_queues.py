"""Queue settings of the Redis store: the hash ``{q:NAME}:conf`` (``max``, ``paused``).

The enqueue, fetch, probe and stats scripts read it in the same call as their own work:
pausing costs the hot path one HGET inside a script, no extra round trip.
"""

from __future__ import annotations

from conveyor.backends.redis._base import RedisBase
from conveyor.backends.redis._connect import guarded


class QueuesMixin(RedisBase):
    """``configure_queue`` / ``pause_queue`` / ``resume_queue``."""

    async def _set_conf(self, queue: str, field: str, value: str | None) -> None:
        k = self.keys(queue)
        pipe = self.client.pipeline(transaction=False)
        if value is None:
            pipe.hdel(k.conf, field)
        else:
            pipe.hset(k.conf, field, value)
        # Listed by queue_stats even before it holds a job; woken idle workers re-probe.
        pipe.sadd(self._g.queues, queue)
        pipe.xadd(k.wake, {"w": "1"}, maxlen=1, approximate=False)
        await pipe.execute()
        self._seen.add(queue)

    @guarded
    async def configure_queue(self, queue: str, *, max_length: int | None) -> None:
        await self._set_conf(queue, "max", None if max_length is None else str(int(max_length)))

    @guarded
    async def pause_queue(self, queue: str) -> None:
        await self._set_conf(queue, "paused", "1")

    @guarded
    async def resume_queue(self, queue: str) -> None:
        await self._set_conf(queue, "paused", None)
