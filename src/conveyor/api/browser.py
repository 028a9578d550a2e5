"""Keep web pages from driving the API through a browser on the same machine.

Any page can make its visitor's browser send requests to ``http://127.0.0.1:8000``: a
cross-site POST with a ``text/plain`` body needs no CORS preflight, a WebSocket handshake
never has one, and a page whose own name is rebound to 127.0.0.1 (DNS rebinding) reads
the answers as its own. As Jupyter, webpack-dev-server and Vite do, requests are checked
before they reach the app:

- **Host**, while no bearer tokens are set: the ``Host`` header must name this server:
  ``localhost`` (or a name under ``.localhost``), an IP address, the name the server was
  bound to, or a name in ``allowed_hosts``. A rebinding page's requests carry the
  attacker's name; an IP address cannot be rebound. A request with no ``Host`` at all
  (HTTP/1.0) is not a browser's. With tokens, auth protects instead, and any Host (a
  proxy's, a load balancer's) is fine.
- **Origin**, always: a state-changing request (any method but GET, HEAD and OPTIONS) or
  a WebSocket handshake that carries an ``Origin`` must come from the server's own origin
  (the one the request's ``Host`` names) or one listed in ``allowed_origins``;
  ``Origin: null`` (sandboxed frames, ``file:`` pages) is refused. Requests without an
  ``Origin`` (curl, servers, SDKs) are not a browser's and pass. Reads need no Origin
  check: without CORS headers the browser keeps cross-origin answers from the page.

JSON bodies are checked by :class:`conveyor.api.middleware.JSONBodyMiddleware`.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from functools import lru_cache

from starlette.types import ASGIApp, Receive, Scope, Send

from conveyor.api.errors import shorten
from conveyor.api.middleware import send_error

#: Methods that change nothing: no Origin check.
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
#: Allows every host or every origin.
ANY = "*"

_AUTHORITY = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::([0-9]{1,5}))?")
_DEFAULT_PORTS = {"http": 80, "https": 443}


def split_authority(authority: str) -> tuple[str, int | None] | None:
    """The lowercased host name (IPv6 without brackets) and port of ``host[:port]``.

    Args:
        authority: a ``Host`` header or the part of an origin after ``://``.

    Returns:
        ``(name, port)``, or ``None`` when ``authority`` is not a plain host and port
        (user info, a path, stray characters).
    """
    match = _AUTHORITY.fullmatch(authority)
    if match is None:
        return None
    name, port = match.group(1).lower(), match.group(2)
    return name.strip("[]"), None if port is None else int(port)


def _is_ip(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


def _normalized_host(entry: str) -> str:
    entry = entry.strip().lower()
    if entry == ANY or entry.startswith("."):
        return entry
    split = split_authority(entry)
    return entry if split is None else split[0]


# Cached: a server sees a handful of Host and Origin values, and the hot submit path
# should not parse them again on every request.
@lru_cache(maxsize=1024)
def host_allowed(host: str, allowed: tuple[str, ...]) -> bool:
    """Whether a ``Host`` header names this server.

    Args:
        host: the header's value.
        allowed: normalized names: exact names, ``.example.com`` for that name and every
            name under it, or ``*`` for any.
    """
    split = split_authority(host)
    if split is None:
        return False
    name = split[0]
    if ANY in allowed or name == "localhost" or name.endswith(".localhost") or _is_ip(name):
        return True
    return any(
        name == entry or (entry.startswith(".") and (name.endswith(entry) or name == entry[1:]))
        for entry in allowed
    )


@lru_cache(maxsize=1024)
def same_origin(origin: str, host: str | None) -> bool:
    """Whether ``origin`` is the origin ``host`` names (scheme aside: a proxy may end TLS).

    A port left out stands for the origin scheme's default port, on both sides.
    """
    scheme, sep, authority = origin.partition("://")
    default = _DEFAULT_PORTS.get(scheme)
    if not sep or default is None or host is None:
        return False
    theirs, ours = split_authority(authority), split_authority(host)
    if theirs is None or ours is None:
        return False
    return theirs[0] == ours[0] and (theirs[1] or default) == (ours[1] or default)


def _host_and_origins(scope: Scope) -> tuple[list[bytes], list[bytes]]:
    hosts: list[bytes] = []
    origins: list[bytes] = []
    for name, value in scope.get("headers", ()):
        if name == b"host":
            hosts.append(value)
        elif name == b"origin":
            origins.append(value)
    return hosts, origins


class SameOriginMiddleware:
    """Refuse requests a web page made on another site (403 FORBIDDEN).

    The checks are described in this module's docstring. A refused WebSocket handshake
    is closed before it is accepted, which the server answers with 403.

    Args:
        app: the app to protect.
        allowed_origins: origins besides the server's own, as browsers send them
            (``https://app.example.com``, ``http://localhost:3000``); ``*`` for any.
        allowed_hosts: names the ``Host`` header may give besides the built-in ones
            (``.example.com`` covers the names under it; ``*`` any); ``None`` turns the
            Host check off (when bearer tokens are set).
        bind_host: the address or name the server is bound to, also accepted as a Host.
    """

    def __init__(
        self,
        app: ASGIApp,
        *,
        allowed_origins: Sequence[str] = (),
        allowed_hosts: Sequence[str] | None = (),
        bind_host: str | None = None,
    ) -> None:
        self.app = app
        self._origins = frozenset(o.strip().lower().rstrip("/") for o in allowed_origins)
        self._hosts: tuple[str, ...] | None = None
        if allowed_hosts is not None:
            extra = () if bind_host is None else (bind_host,)
            self._hosts = tuple(_normalized_host(h) for h in (*allowed_hosts, *extra))

    def _refusal(self, scope: Scope) -> tuple[str, dict[str, str]] | None:
        """Why this request is refused (message and details), or ``None``."""
        hosts, origins = _host_and_origins(scope)
        if len(hosts) > 1:
            return "more than one Host header", {}
        # Latin-1, as Starlette decodes headers.
        host = hosts[0].decode("latin-1") if hosts else None
        if self._hosts is not None and host is not None and not host_allowed(host, self._hosts):
            return (
                f"host {shorten(host)!r} is not allowed; add it to CONVEYOR_ALLOWED_HOSTS "
                "or set CONVEYOR_API_TOKENS",
                {"host": shorten(host)},
            )
        if not origins or (scope["type"] == "http" and scope["method"] in SAFE_METHODS):
            return None
        origin = origins[0].decode("latin-1").strip().lower().rstrip("/")
        if len(origins) == 1 and (
            ANY in self._origins or origin in self._origins or same_origin(origin, host)
        ):
            return None
        return (
            f"cross-origin request from {shorten(origin)!r} refused; add the origin to "
            "CONVEYOR_ALLOWED_ORIGINS to allow it",
            {"origin": shorten(origin)},
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        refusal = None if scope["type"] not in ("http", "websocket") else self._refusal(scope)
        if refusal is None:
            await self.app(scope, receive, send)
            return
        message, details = refusal
        if scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1008, "reason": "forbidden"})
            return
        await send_error(send, 403, "FORBIDDEN", message, details=details)
