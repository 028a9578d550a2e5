"""Addresses a webhook may not reach: private, loopback, link-local and the like.

Pure functions on addresses, shared by the API (which refuses a ``callbackUrl`` that
names such an address literally, at submit time) and the webhook deliverer (which checks
the addresses a host name resolves to, when it connects). Integer, hex and octal IPv4
spellings (``2130706433``, ``0x7f.1``, ``0177.0.0.1``) are read as a C resolver would
read them, and IPv6 forms that embed an IPv4 address (IPv4-mapped, 6to4, Teredo, NAT64)
are judged by that address.
"""

from __future__ import annotations

import ipaddress
import re

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_CGNAT = ipaddress.IPv4Network("100.64.0.0/10")
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_NUMERIC_HOST = re.compile(r"[0-9a-fx.]+", re.IGNORECASE)


def parse_ipv4_loose(host: str) -> ipaddress.IPv4Address | None:
    """Read ``host`` as the BSD ``inet_aton`` would: 1-4 parts, each decimal, ``0x`` hex
    or ``0``-prefixed octal (``127.1``, ``2130706433``, ``0x7f.1``). None if it is not."""
    if not _NUMERIC_HOST.fullmatch(host):
        return None
    parts = host[:-1].split(".") if host.endswith(".") else host.split(".")
    if not 1 <= len(parts) <= 4:
        return None
    values: list[int] = []
    for part in parts:
        try:
            if part.lower().startswith("0x"):
                values.append(int(part[2:] or "0", 16))
            elif len(part) > 1 and part.startswith("0"):
                values.append(int(part, 8))
            else:
                values.append(int(part, 10))
        except ValueError:
            return None
    *head, last = values
    if any(v > 255 for v in head) or last >= 256 ** (5 - len(values)):
        return None
    number = last
    for i, v in enumerate(head):
        number |= v << (8 * (3 - i))
    return ipaddress.IPv4Address(number)


def literal_ip(host: str) -> IPAddress | None:
    """The address a host names literally (any IPv4 spelling, IPv6), else None."""
    bare = host.strip("[]")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        return parse_ipv4_loose(bare)


def _embedded_v4(ip: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    found = []
    if ip.ipv4_mapped is not None:
        found.append(ip.ipv4_mapped)
    if ip.sixtofour is not None:
        found.append(ip.sixtofour)
    if ip.teredo is not None:
        found += list(ip.teredo)
    if ip in _NAT64 or ip in _NAT64_LOCAL:
        found.append(ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF))
    return found


def forbidden_reason(ip: IPAddress) -> str | None:
    """Why a webhook may not connect to ``ip``, or None when it may."""
    if isinstance(ip, ipaddress.IPv6Address):
        for inner in _embedded_v4(ip):
            reason = forbidden_reason(inner)
            if reason is not None:
                return f"{reason} (embedded in {ip})"
        if ip.scope_id:
            return "scoped (link-local)"
    checks = (
        (ip.is_loopback, "loopback"),
        (ip.is_unspecified, "unspecified"),
        (ip.is_link_local, "link-local"),
        (ip.is_multicast, "multicast"),
        (isinstance(ip, ipaddress.IPv4Address) and ip in _CGNAT, "shared (CGNAT 100.64/10)"),
        (ip.is_private, "private"),
        (ip.is_reserved, "reserved"),
        (not ip.is_global, "not globally routable"),
    )
    for hit, reason in checks:
        if hit:
            return reason
    return None
