"""The leader lock of the Redis store."""

from __future__ import annotations

from conveyor.backends.redis._base import RedisBase
from conveyor.backends.redis._connect import guarded


class LockMixin(RedisBase):
    """``acquire_lock`` / ``release_lock``: a hash per lock and a token counter.

    Both keys share the hash tag ``{lock:NAME}``, so one script call serves a cluster too.
    """

    def _lock_keys(self, name: str) -> list[str]:
        tag = f"{self._g.prefix}:{{lock:{name}}}"
        return [f"{tag}:holder", f"{tag}:token"]

    @guarded
    async def acquire_lock(self, name: str, owner: str, ttl: float) -> int | None:
        args = [self._now_arg(), owner, repr(float(ttl)), ""]
        token = await self.scripts["lock"](self.client, self._lock_keys(name), args)
        return None if token is None else int(token)

    @guarded
    async def release_lock(self, name: str, owner: str) -> None:
        await self.scripts["lock"](
            self.client, self._lock_keys(name), [self._now_arg(), owner, "0", "release"]
        )
