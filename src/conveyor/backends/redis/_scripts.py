"""The Lua scripts (package data), loaded once per server and run with EVALSHA.

Each script is ``scripts/lib.lua`` followed by its own file, with the store's event
retention written into it (one set of scripts per retention value, shared by every
store with that value). The SHA1 is computed here, so the hot path sends only EVALSHA;
a server that lost its script cache (restart, failover, ``SCRIPT FLUSH``) answers
NOSCRIPT, and the script is loaded and the call repeated once.

What a script may do when Redis is at its ``maxmemory`` (``noeviction``) is the Redis 7
script flag on its file's first line, which goes first in the assembled source (before
``lib.lua``): ``#!lua flags=allow-oom`` for the steps that drain the queue or free memory
(fetch, probe, renew, complete, progress, cancel, purge, the worker registry, the leader
lock, webhook state), ``#!lua`` for those that add work (enqueue, retry: refused whole,
before they write anything), ``#!lua flags=no-writes`` for reads. A file without the line
(schedules) runs in Redis's compatibility mode: it is refused at the limit only by its
first write that could grow memory. docs/reliability.md says why each is where it is.
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Mapping, Sequence
from importlib import resources
from typing import Any

from redis.exceptions import NoScriptError

NAMES = (
    "enqueue",
    "fetch",
    "probe",
    "renew",
    "complete",
    "progress",
    "cancel",
    "retry",
    "purge",
    "stats",
    "lock",
    "schedules",
    "workers",
    "webhook",
)

Arg = str | int | float


def _source(name: str) -> str:
    return resources.files(__package__).joinpath("scripts", f"{name}.lua").read_text("utf-8")


def assemble(lib: str, body: str) -> str:
    """``lib`` followed by ``body``, with ``body``'s shebang line (its script flags),
    if any, first: Redis reads flags only from a script's first line."""
    if body.startswith("#!"):
        shebang, _, rest = body.partition("\n")
        return f"{shebang}\n{lib}\n{rest}"
    return f"{lib}\n{body}"


class Script:
    """One Lua script: its full source and SHA1."""

    __slots__ = ("name", "sha", "source")

    def __init__(self, name: str, source: str) -> None:
        self.name = name
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    async def __call__(self, client: Any, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        """Run on ``client``, loading the script first if the server does not know it."""
        try:
            return await client.evalsha(self.sha, len(keys), *keys, *args)
        except NoScriptError:
            await client.script_load(self.source)
            return await client.evalsha(self.sha, len(keys), *keys, *args)

    def queue(self, pipe: Any, keys: Sequence[str], args: Sequence[Arg]) -> None:
        """Add a call to a pipeline (see :func:`run_pipeline` for NOSCRIPT handling)."""
        pipe.evalsha(self.sha, len(keys), *keys, *args)


@functools.cache
def scripts_for(event_retention: float) -> Mapping[str, Script]:
    """Every script, for a store that keeps events ``event_retention`` seconds.

    Read once per process and value; scripts are immutable package data.
    """
    retention_ms = max(1, round(event_retention * 1000))
    lib = _source("lib").replace("__EVENT_RETENTION_MS__", str(retention_ms))
    return {name: Script(name, assemble(lib, _source(name))) for name in NAMES}


async def run_pipeline(
    client: Any, calls: Sequence[tuple[Script, Sequence[str], Sequence[Arg]]]
) -> list[Any]:
    """Run script calls in one round trip; results in call order.

    Calls refused with NOSCRIPT did not run; they are repeated one by one after loading.

    Raises:
        redis.RedisError: any other error of any call.
    """
    if len(calls) == 1:
        script, keys, args = calls[0]
        return [await script(client, keys, args)]
    pipe = client.pipeline(transaction=False)
    for script, keys, args in calls:
        script.queue(pipe, keys, args)
    results: list[Any] = await pipe.execute(raise_on_error=False)
    for i, result in enumerate(results):
        if isinstance(result, NoScriptError):
            script, keys, args = calls[i]
            results[i] = await script(client, keys, args)
        elif isinstance(result, Exception):
            raise result
    return results
