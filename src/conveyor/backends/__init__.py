"""Stores, chosen by URL scheme. Drivers are imported only when their scheme is used."""

from __future__ import annotations

from urllib.parse import urlsplit

from conveyor.backends.base import Backend, Retention
from conveyor.errors import ConfigurationError

__all__ = ["Backend", "Retention", "backend_from_url"]


def backend_from_url(url: str, retention: Retention | None = None) -> Backend:
    """Build (but do not open) the backend a URL names.

    ``memory://``, ``sqlite:///relative.db``, ``sqlite:////absolute.db``,
    ``redis://host:port/db``.

    Args:
        url: the store.
        retention: how long it keeps finished jobs and events (defaults: 24 h, 1 h).

    Raises:
        ConfigurationError: unknown scheme, malformed URL, or missing optional driver.
    """
    scheme = urlsplit(url).scheme.lower()
    if scheme == "memory":
        from conveyor.backends.memory import InMemoryBackend

        return InMemoryBackend(url, retention=retention or Retention())
    if scheme == "sqlite":
        from conveyor.backends.sqlite import SQLiteBackend

        return SQLiteBackend(url, retention=retention or Retention())
    if scheme in {"redis", "rediss", "unix"}:
        try:
            from conveyor.backends.redis import RedisBackend
        except ImportError as exc:
            if not (exc.name or "").startswith(("redis", "hiredis")):
                raise  # a bug in Conveyor, not a missing extra
            raise ConfigurationError(
                f"the redis driver is not installed ({exc}); install it with: "
                "pip install 'conveyor[redis]'"
            ) from None
        backend: Backend = RedisBackend(url, retention=retention or Retention())
        return backend
    raise ConfigurationError(
        f"unsupported store URL {url!r}: use memory://, sqlite:///path.db or redis://host:port/db"
    )
