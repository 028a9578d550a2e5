"""Key names and URL options of the Redis store (layout: see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from conveyor.errors import ConfigurationError

_OPTIONS = {"cluster", "prefix", "result_ttl"}


@dataclass(frozen=True, slots=True)
class RedisOptions:
    """What a ``redis://`` URL asks for, beyond what redis-py itself understands.

    Args:
        url: the URL passed on to redis-py (Conveyor's own query options removed).
        cluster: ``?cluster=1``: connect with the Redis Cluster client.
        prefix: ``?prefix=NAME``: the first component of every key (default ``conveyor``).
        result_ttl: ``?result_ttl=SECONDS``, deprecated: the retention of finished jobs
            is ``CONVEYOR_RESULT_TTL_SECONDS``, the same for every store; an old URL
            that still says it must agree with that setting.
    """

    url: str
    cluster: bool = False
    prefix: str = "conveyor"
    result_ttl: float | None = None


def parse_redis_url(url: str) -> RedisOptions:
    """Split Conveyor's options (``cluster``, ``prefix``, ``result_ttl``) off a URL.

    Raises:
        ConfigurationError: an option has a value that cannot be used.
    """
    parts = urlsplit(url)
    if parts.scheme.lower() not in {"redis", "rediss", "unix"}:
        raise ConfigurationError(f"not a Redis URL: {url!r}")
    own: dict[str, str] = {}
    rest: list[tuple[str, str]] = []
    for key, value in parse_qsl(parts.query, keep_blank_values=True):
        if key in _OPTIONS:
            own[key] = value
        else:
            rest.append((key, value))
    cluster = own.get("cluster", "0").lower() in {"1", "true", "yes", "on"}
    prefix = own.get("prefix", "conveyor")
    if not prefix or any(c in prefix for c in "{}"):
        raise ConfigurationError(f"invalid key prefix {prefix!r} in {url!r}")
    result_ttl: float | None = None
    if "result_ttl" in own:
        try:
            result_ttl = float(own["result_ttl"])
        except ValueError:
            raise ConfigurationError(f"invalid result_ttl in {url!r}") from None
        if not result_ttl > 0:
            raise ConfigurationError(f"result_ttl must be positive in {url!r}")
    if cluster and parts.scheme.lower() == "unix":
        raise ConfigurationError("Redis Cluster needs redis:// or rediss://, not unix://")
    plain = urlunsplit(parts._replace(query=urlencode(rest)))
    return RedisOptions(plain, cluster, prefix, result_ttl)


def display_url(url: str) -> str:
    """``url`` with its password masked, for logs and error messages."""
    parts = urlsplit(url)
    userinfo, at, hostport = parts.netloc.rpartition("@")
    if not at:
        return url
    user, colon, _ = userinfo.partition(":")
    return urlunsplit(parts._replace(netloc=f"{user}{':***' if colon else ''}@{hostport}"))


class QueueKeys:
    """The keys of one queue; all share the hash tag ``{q:NAME}`` (one cluster slot).

    Args:
        prefix: the store's key prefix.
        queue: the queue's name.
        events: the event stream this queue's scripts append to (global on a single
            server, per queue on a cluster).
        jobs: the prefix of job records' keys (global on a single server, so a job is
            found by its id alone; per queue on a cluster).
    """

    __slots__ = (
        "cancelled",
        "completed",
        "conf",
        "delayed",
        "done",
        "events",
        "failed",
        "idem_prefix",
        "job_prefix",
        "leases",
        "pending",
        "prios",
        "queue",
        "stream_prefix",
        "wake",
    )

    def __init__(
        self, prefix: str, queue: str, events: str | None = None, jobs: str | None = None
    ) -> None:
        base = f"{prefix}:{{q:{queue}}}:"
        self.queue = queue
        self.prios = base + "prios"
        self.stream_prefix = base + "s:"
        self.delayed = base + "delayed"
        self.leases = base + "leases"
        self.wake = base + "wake"
        self.done = base + "done"  # no longer written; purge deletes what older versions left
        self.conf = base + "conf"
        self.pending = base + "i:pending"
        self.completed = base + "i:completed"
        self.failed = base + "i:failed"
        self.cancelled = base + "i:cancelled"
        self.job_prefix = jobs if jobs is not None else base + "job:"
        self.idem_prefix = base + "idem:"
        self.events = events if events is not None else base + "events"

    def stream(self, priority: int) -> str:
        """The work stream of one priority level."""
        return f"{self.stream_prefix}{priority}"

    def job(self, job_id: str) -> str:
        """The hash holding one job's record."""
        return self.job_prefix + job_id

    def lease_set(self, token: str) -> str:
        """The set of the job ids leased under one lease token (``scripts/lib.lua``)."""
        return f"{self.leases}:{token}"

    def idempotency(self, key: str) -> str:
        """The string remembering ``job_id|expires_at`` for an idempotency key."""
        return self.idem_prefix + key


class GlobalKeys:
    """Keys not bound to one queue (each lives in a slot of its own on a cluster)."""

    __slots__ = ("events", "marker", "prefix", "queues", "worker_expiry", "workers")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.queues = f"{prefix}:queues"
        self.events = f"{prefix}:events"
        self.marker = f"{prefix}:marker"  # see _watch.py
        # One slot for the registry, so one script reads and prunes it.
        self.workers = f"{prefix}:{{workers}}:info"
        self.worker_expiry = f"{prefix}:{{workers}}:expiry"

    def cursor(self, name: str) -> str:
        """A named position in the event feed (webhook deliverer, ...)."""
        return f"{self.prefix}:cursor:{name}"

    def route(self, job_id: str) -> str:
        """On a cluster: ``priority:queue`` of a job, for callers that know only its id."""
        return f"{self.prefix}:jobq:{job_id}"

    @property
    def jobs(self) -> str:
        """On a single server: the prefix of every job record's key."""
        return f"{self.prefix}:job:"
