"""Where a webhook may go: the SSRF guard.

A target is refused unless every address its host resolves to is globally routable:
private (10/8, 172.16/12, 192.168/16, fc00::/7), loopback, link-local (169.254/16 -
cloud metadata - and fe80::/10), multicast, reserved, unspecified, the shared CGNAT range
100.64/10, and IPv6 forms that embed such an IPv4 address (IPv4-mapped, 6to4, Teredo,
NAT64) are all refused. Integer, hex and octal IPv4 spellings (``2130706433``,
``0x7f.1``, ``0177.0.0.1``) are normalized first, as a C resolver would read them.

The check is made on the addresses actually connected to: :class:`PinnedTransport`
resolves once, vets, and connects to the vetted address itself (keeping the ``Host``
header and TLS server name), so DNS rebinding between check and connect cannot redirect
a delivery. Redirects are never followed.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Awaitable, Callable

import httpx

from conveyor.addresses import IPAddress, forbidden_reason, literal_ip
from conveyor.errors import ConveyorError

Resolver = Callable[[str, int], Awaitable[list[str]]]


class TargetRefusedError(ConveyorError):
    """The webhook target is not allowed (SSRF guard), or cannot be resolved."""


async def system_resolver(host: str, port: int) -> list[str]:
    """Resolve with the system resolver, off the event loop."""
    infos = await asyncio.get_running_loop().getaddrinfo(
        host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP
    )
    return [str(info[4][0]) for info in infos]


async def vet_host(
    host: str, port: int, *, allow_private: bool, resolver: Resolver = system_resolver
) -> list[IPAddress]:
    """The addresses a webhook to ``host`` may connect to, all of them vetted.

    Raises:
        TargetRefusedError: the host does not resolve, or any of its addresses is
            forbidden (a name resolving to both a public and a private address is refused:
            which one a connection would use is not ours to guess).
    """
    literal = literal_ip(host)
    if literal is not None:
        addresses: list[IPAddress] = [literal]
    else:
        try:
            found = await resolver(host, port)
        except (OSError, UnicodeError) as exc:
            raise TargetRefusedError(f"cannot resolve {host!r}: {exc}") from None
        addresses = []
        for text in dict.fromkeys(found):
            try:
                addresses.append(ipaddress.ip_address(text))
            except ValueError:
                raise TargetRefusedError(f"{host!r} resolved to {text!r}") from None
        if not addresses:
            raise TargetRefusedError(f"{host!r} resolves to no address")
    if not allow_private:
        for ip in addresses:
            reason = forbidden_reason(ip)
            if reason is not None:
                raise TargetRefusedError(
                    f"refused: {host} -> {ip} is {reason} "
                    "(set CONVEYOR_WEBHOOK_ALLOW_PRIVATE=1 to allow)"
                )
    return addresses


class PinnedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that connects only to vetted addresses.

    Each request's host is resolved and vetted with :func:`vet_host`; the request then
    goes to the first vetted address itself, with the original ``Host`` header and TLS
    server name (certificates are checked against the host name as usual).

    Args:
        allow_private: skip the address checks (resolution and pinning still apply).
        resolver: ``(host, port) -> [address, ...]``; the system resolver by default.
        **transport_options: passed to :class:`httpx.AsyncHTTPTransport`.
    """

    def __init__(
        self,
        *,
        allow_private: bool = False,
        resolver: Resolver = system_resolver,
        **transport_options: object,
    ) -> None:
        self._allow_private = allow_private
        self._resolver = resolver
        self._inner = httpx.AsyncHTTPTransport(retries=0, **transport_options)  # type: ignore[arg-type]

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        if url.scheme not in ("http", "https"):
            raise TargetRefusedError(f"refused: scheme {url.scheme!r}")
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await vet_host(
            url.host, port, allow_private=self._allow_private, resolver=self._resolver
        )
        request.url = url.copy_with(host=str(addresses[0]))
        if url.scheme == "https" and literal_ip(url.host) is None:
            request.extensions = {**request.extensions, "sni_hostname": url.host}
        return await self._inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self._inner.aclose()
