"""SSRF guard for the byte-download fallback: which URLs and addresses we are willing to fetch.

Only ``http``/``https``. Every address a host name resolves to must be public (no loopback,
private, link-local, cloud-metadata, carrier-grade NAT, multicast, reserved or unspecified address,
including the IPv4 ones hidden inside IPv4-mapped, NAT64 and 6to4 IPv6 addresses). The check runs
on the *resolved* addresses, inside the HTTP client's resolver, so the connection goes to exactly
the addresses that were checked (no DNS-rebinding window); IP literals, which the client does not
resolve, are checked on the URL. Redirects are followed by hand, each hop checked the same way.

``allow_private=True`` (setting ``ALLOW_PRIVATE_URLS``, local development and tests only) turns the
address check off; the scheme check and the redirect limit stay.
"""

from __future__ import annotations

import ipaddress
import re
import socket
from typing import Awaitable, Callable, Iterable

from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

ALLOWED_SCHEMES = ("http", "https")
MAX_REDIRECTS = 5

_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.ip_network("64:ff9b:1::/48")
# Hostnames that are internal by convention even if some resolver maps them elsewhere.
_INTERNAL_NAMES = ("localhost", "metadata.google.internal", "metadata")
_INTERNAL_SUFFIXES = (".localhost", ".internal", ".local", ".localdomain", ".home.arpa")

_NUMERIC_HOST = re.compile(r"^((0x[0-9a-f]*|[0-9]+)\.?)+$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class UrlRefused(Exception):
    """The URL (or an address it resolves to) may not be fetched."""


def address_problem(address: str | IPAddress) -> str | None:
    """Why this IP address may not be fetched, or None when it is a public unicast address."""
    try:
        ip = ipaddress.ip_address(str(address).split("%", 1)[0])  # drop an IPv6 zone id
    except ValueError:
        return f"{address!r} is not an IP address"
    if isinstance(ip, ipaddress.IPv6Address):
        embedded: ipaddress.IPv4Address | None = ip.ipv4_mapped
        if embedded is None and ip in _NAT64:
            embedded = ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
        if embedded is None and ip.sixtofour is not None:
            embedded = ip.sixtofour
        if embedded is not None:
            inner = address_problem(embedded)
            return f"{ip} embeds {inner}" if inner else None
        if ip in _NAT64_LOCAL or ip.is_site_local:
            return f"{ip} is a non-public address"
    if ip.is_loopback:
        return f"{ip} is a loopback address"
    if ip.is_link_local:
        return f"{ip} is a link-local address (cloud metadata lives here)"
    if ip.is_unspecified:
        return f"{ip} is the unspecified address"
    if ip.is_multicast:
        return f"{ip} is a multicast address"
    if ip.is_private:
        return f"{ip} is a private address"
    if ip.is_reserved or not ip.is_global:
        return f"{ip} is not a public address"
    return None


def _is_ip_literal(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]").split("%", 1)[0])
        return True
    except ValueError:
        return False


AddressCheck = Callable[[str], "str | None"]


def check_url(url: str | URL, *, allow_private: bool, problem: AddressCheck = address_problem) -> URL:
    """The parsed URL when its scheme and (literal) host may be fetched; raises UrlRefused otherwise.

    Host names are checked later, on their resolved addresses (see GuardedResolver)."""
    try:
        parsed = url if isinstance(url, URL) else URL(url)
    except (ValueError, TypeError) as exc:
        raise UrlRefused(f"unparseable URL ({type(exc).__name__})") from None
    if parsed.scheme.lower() not in ALLOWED_SCHEMES:
        raise UrlRefused(f"scheme {parsed.scheme or '(none)'!r} is not http(s)")
    host = (parsed.raw_host or "").lower().rstrip(".")
    if not host:
        raise UrlRefused("URL has no host")
    if not _is_ip_literal(host) and _NUMERIC_HOST.match(host):
        # 2130706433, 0x7f.1, 127.1 …: resolvers read these as IP addresses; nobody needs them.
        raise UrlRefused(f"numeric host {host!r} is not a canonical IP address")
    if allow_private:
        return parsed
    if _is_ip_literal(host):
        reason = problem(host.strip("[]"))
        if reason:
            raise UrlRefused(reason)
    elif host in _INTERNAL_NAMES or host.endswith(_INTERNAL_SUFFIXES):
        raise UrlRefused(f"host {host!r} is internal")
    return parsed


Resolve = Callable[[str, int, socket.AddressFamily], Awaitable[list[ResolveResult]]]


class GuardedResolver(AbstractResolver):
    """An aiohttp resolver that refuses a host when *any* of its addresses is not public.

    aiohttp connects to the addresses this returns, so what was checked is what is used. The
    refusal reason is kept in ``refused`` (aiohttp wraps resolver errors in its own exception).
    `resolve` and `problem` can be injected (tests map made-up names to chosen addresses, and
    declare one loopback address "public" to stand in for the internet)."""

    def __init__(self, *, allow_private: bool, resolve: Resolve | None = None,
                 problem: AddressCheck = address_problem):
        self.allow_private = allow_private
        self._problem = problem
        self._inner = None if resolve is not None else ThreadedResolver()
        self._resolve = resolve or self._inner.resolve  # type: ignore[union-attr]
        self.refused: str | None = None

    async def resolve(self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        results = await self._resolve(host, port, family)
        if not self.allow_private:
            for result in results:
                reason = self._problem(result["host"])
                if reason:
                    self.refused = f"{host} resolves to {reason}"
                    raise OSError(self.refused)
        return results

    async def close(self) -> None:
        if self._inner is not None:
            await self._inner.close()


def static_resolver(mapping: dict[str, Iterable[str]]) -> Resolve:
    """A `resolve` function over a fixed name → addresses table (for tests and local setups)."""

    async def resolve(host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET) -> list[ResolveResult]:
        addresses = list(mapping.get(host, ()))
        if not addresses:
            raise OSError(f"cannot resolve {host}")
        return [
            ResolveResult(hostname=host, host=a, port=port,
                          family=socket.AF_INET6 if ":" in a else socket.AF_INET, proto=0,
                          flags=socket.AI_NUMERICHOST)
            for a in addresses
        ]

    return resolve
