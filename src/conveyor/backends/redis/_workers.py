"""The worker registry of the Redis store (keys ``{workers}:info`` and ``:expiry``)."""

from __future__ import annotations

from conveyor.backends._common import worker_from_json, worker_to_json
from conveyor.backends.base import WorkerInfo
from conveyor.backends.redis._base import RedisBase
from conveyor.backends.redis._connect import guarded


class WorkersMixin(RedisBase):
    """``register_worker`` / ``unregister_worker`` / ``list_workers``: expiry by the
    store's clock, pruned by the script on every call."""

    async def _workers(
        self, op: str, worker_id: str = "", ttl: float = 0.0, data: str = ""
    ) -> list[str]:
        keys = [self._g.workers, self._g.worker_expiry]
        args = [self._now_arg(), op, worker_id, repr(float(ttl)), data]
        answer: list[str] = await self.scripts["workers"](self.client, keys, args)
        return answer

    @guarded
    async def register_worker(self, info: WorkerInfo, ttl: float) -> None:
        await self._workers("register", info.id, ttl, worker_to_json(info))

    @guarded
    async def unregister_worker(self, worker_id: str) -> None:
        await self._workers("unregister", worker_id)

    @guarded
    async def list_workers(self) -> list[WorkerInfo]:
        found = (worker_from_json(text) for text in await self._workers("list") if text)
        return [w for w in found if w is not None]
