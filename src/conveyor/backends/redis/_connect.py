"""Building the redis-py client, translating its errors, and startup checks."""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Coroutine
from typing import Any, ParamSpec, TypeVar

from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster
from redis.backoff import ExponentialBackoff
from redis.exceptions import (
    ClusterDownError,
    ConnectionError,
    OutOfMemoryError,
    ReadOnlyError,
    RedisClusterException,
    RedisError,
    ResponseError,
    TimeoutError,
    TryAgainError,
)
from redis.retry import Retry

from conveyor.backends.redis._keys import RedisOptions, display_url
from conveyor.errors import BackendError, BackendUnavailableError

logger = logging.getLogger("conveyor.backends.redis")

P = ParamSpec("P")
T = TypeVar("T")

#: Seconds a single socket read may take; blocking reads are kept well below it.
SOCKET_TIMEOUT = 10.0
#: The longest single ``XREAD BLOCK`` an idle worker issues.
MAX_BLOCK = 5.0

# Answers meaning "not now" rather than "never": the server is unreachable, starting,
# failing over, read-only (a replica, mid-failover), out of memory, busy with a script or
# short of the replicas it must write to. They map to BackendUnavailableError, which
# callers retry. redis-py turns some answers into classes of their own (and strips their
# code from the message; connection errors include LOADING); the rest are told by code.
_UNAVAILABLE = (
    ConnectionError,
    TimeoutError,
    OSError,
    ReadOnlyError,
    OutOfMemoryError,
    TryAgainError,
    ClusterDownError,  # and MASTERDOWN
    RedisClusterException,
)
_TRANSIENT = frozenset(
    {"LOADING", "MASTERDOWN", "CLUSTERDOWN", "TRYAGAIN", "READONLY", "OOM", "BUSY", "NOREPLICAS"}
)

_warned: set[str] = set()


def make_client(options: RedisOptions) -> Any:
    """Build (without connecting) the client: retries with backoff on connection errors,
    health checks on idle connections, hiredis when installed (redis-py picks it)."""
    common: dict[str, Any] = {
        "decode_responses": True,
        "encoding_errors": "replace",  # a foreign binary value must not crash a read
        "socket_timeout": SOCKET_TIMEOUT,
        "socket_connect_timeout": 5.0,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=3),
        "retry_on_error": [ConnectionError, TimeoutError, ConnectionResetError],
        "health_check_interval": 15,
    }
    if options.cluster:
        return RedisCluster.from_url(options.url, **common)
    return Redis.from_url(options.url, **common)


def translate(exc: BaseException, where: str) -> BaseException:
    """The Conveyor error for a driver error (other exceptions pass unchanged):
    :class:`BackendUnavailableError` for "not now", :class:`BackendError` for any other
    error the server or driver raises."""
    # An answer's code is its first word ("BUSY", but not "BUSYGROUP" or "BUSYKEY").
    code = str(exc).partition(" ")[0] if isinstance(exc, ResponseError) else ""
    if isinstance(exc, _UNAVAILABLE) or code in _TRANSIENT:
        return BackendUnavailableError(f"Redis {where}: {exc}")
    if isinstance(exc, RedisError):
        return BackendError(f"Redis {where}: {exc}")
    return exc


def guarded(fn: Callable[P, Coroutine[Any, Any, T]]) -> Callable[P, Coroutine[Any, Any, T]]:
    """Let no driver exception escape a backend method."""
    where = fn.__name__

    @functools.wraps(fn)
    async def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return await fn(*args, **kwargs)
        except (RedisError, OSError) as exc:
            raise translate(exc, where) from exc

    return wrapper


async def check_server(client: Any, url: str) -> None:
    """Warn (once per process and URL) when the server may lose or evict jobs."""
    try:
        config = await client.config_get("appendonly")
        config.update(await client.config_get("maxmemory-policy"))
    except ResponseError as exc:  # CONFIG is often renamed or denied on managed Redis
        if url not in _warned:
            _warned.add(url)
            logger.warning(
                "cannot check Redis persistence settings (%s); make sure "
                "appendonly is yes and maxmemory-policy is noeviction",
                exc,
            )
        return
    if url in _warned:
        return
    _warned.add(url)
    url = display_url(url)
    if config.get("appendonly") != "yes":
        logger.warning(
            "Redis at %s runs with appendonly=no: acknowledged jobs are lost if it "
            "restarts; set appendonly yes (appendfsync everysec)",
            url,
        )
    policy = config.get("maxmemory-policy", "noeviction")
    if policy != "noeviction":
        logger.warning(
            "Redis at %s has maxmemory-policy=%s: under memory pressure it may evict job "
            "records and queues; set maxmemory-policy noeviction",
            url,
            policy,
        )
