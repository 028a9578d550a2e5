"""The delivery log of the Redis store: webhook state in the job hash (field ``wh``),
named cursors as plain strings."""

from __future__ import annotations

from typing import Any

from conveyor.backends.redis._base import RedisBase
from conveyor.backends.redis._connect import guarded
from conveyor.serialization import dumps


class DeliveryMixin(RedisBase):
    """``record_webhook`` / ``get_cursor`` / ``set_cursor``."""

    @guarded
    async def record_webhook(self, job_id: str, state: dict[str, Any]) -> None:
        route = (await self._resolve([job_id])).get(job_id)
        if route is None:
            return  # purged (or never stored): nothing to record on
        key = self.keys(route[0]).job(job_id)
        await self.scripts["webhook"](self.client, [key], ["", dumps(state).decode()])

    @guarded
    async def get_cursor(self, name: str) -> str | None:
        value: str | None = await self.client.get(self._g.cursor(name))
        return value

    @guarded
    async def set_cursor(self, name: str, value: str) -> None:
        await self.client.set(self._g.cursor(name), value)
