"""SSRF guard for user-configured webhook targets.

A webhook URL is checked twice: when it is saved (``check_target_url``, so the user hears
about it at once) and on every connect (``guarded_connector``), because DNS may answer
differently later. The connect-time check judges the address the socket is actually opened
to, so there is no window between check and connect, and it covers literal IP hosts, which
aiohttp never passes to a resolver.

The decision core (``literal_address``, ``forbidden_reason``) is pure. It uses explicit
tables rather than ``ipaddress.is_global`` alone: on Python 3.11 ``is_global`` is true for
multicast, site-local, and IPv4-compatible or NAT64 addresses embedding 127.0.0.1.
"""

from __future__ import annotations

import ipaddress
import re
import socket
import ssl as ssl_module
from collections.abc import Iterable, Sequence

import aiohttp
from aiohttp.abc import AbstractResolver, ResolveResult
from aiohttp.resolver import ThreadedResolver
from yarl import URL

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

_V4 = ipaddress.IPv4Network
_V6 = ipaddress.IPv6Network
# First match names the reason; anything else must also pass ``is_global``.
_V4_RANGES: tuple[tuple[ipaddress.IPv4Network, str], ...] = (
    (_V4("0.0.0.0/8"), "is an unspecified ('this network') address"),
    (_V4("127.0.0.0/8"), "is a loopback address"),
    (_V4("10.0.0.0/8"), "is a private address"),
    (_V4("172.16.0.0/12"), "is a private address"),
    (_V4("192.168.0.0/16"), "is a private address"),
    (_V4("100.64.0.0/10"), "is a shared (carrier-grade NAT) address"),
    (_V4("169.254.0.0/16"), "is a link-local address"),
    (_V4("224.0.0.0/4"), "is a multicast address"),
    (_V4("255.255.255.255/32"), "is the broadcast address"),
    (_V4("240.0.0.0/4"), "is a reserved address"),
    # IETF protocol assignments; Python 3.11.7 calls most of it global.
    (_V4("192.0.0.0/24"), "is an IETF protocol address"),
)
_V6_RANGES: tuple[tuple[ipaddress.IPv6Network, str], ...] = (
    (_V6("::1/128"), "is a loopback address"),
    (_V6("::/128"), "is the unspecified address"),
    (_V6("fe80::/10"), "is a link-local address"),
    (_V6("fec0::/10"), "is a site-local address"),
    (_V6("fc00::/7"), "is a unique-local address"),
    (_V6("ff00::/8"), "is a multicast address"),
    # Teredo's embedded client address is obfuscated and the tunnel is not globally routable.
    (_V6("2001::/32"), "is a Teredo address"),
    (_V6("3fff::/20"), "is a documentation address"),
)
_GLOBAL_UNICAST = _V6("2000::/3")
# Through these the IPv4 host is the real destination, so its verdict is the verdict.
_MAPPED = _V6("::ffff:0:0/96")
_NAT64 = _V6("64:ff9b::/96")
# These carry an IPv4 address but must also pass as IPv6 addresses.
_COMPATIBLE = _V6("::/96")
# One inet_aton part: hex, octal (leading 0) or decimal; ASCII only (int() takes other digits).
_AT_PART = re.compile(r"0[xX][0-9a-fA-F]+|0[0-7]*|[1-9][0-9]*", re.ASCII)


class ForbiddenTarget(OSError):
    """The target address may not be called; str() is ``f"{host} {reason}"``, naming the host,
    the address and why (e.g. "127.0.0.1 is a loopback address"). Subclass of OSError so
    aiohttp reports it as a connection error (``ClientConnectorError.os_error``)."""

    def __init__(self, host: str, reason: str) -> None:
        super().__init__(f"{host} {reason}")
        # aiohttp's ClientConnectorError shows strerror; without it the message reads "[None]".
        self.strerror = f"{host} {reason}"
        self.host = host
        self.reason = reason


def parse_allowed(networks: Iterable[str]) -> tuple[Network, ...]:
    """Parse operator CIDR strings (``TriggerSettings.allowed_networks``) once at start-up.

    Host bits are ignored (``10.1.2.3/8`` means ``10.0.0.0/8``). Raises ValueError naming the entry.
    """
    parsed: list[Network] = []
    for network in networks:
        try:
            parsed.append(ipaddress.ip_network(network.strip(), strict=False))
        except ValueError:
            raise ValueError(f"{network!r} is not a CIDR network such as 127.0.0.0/8") from None
    return tuple(parsed)


def literal_address(host: str) -> Address | None:
    """The address a URL host denotes if it is numeric, else None (a DNS name). Pure.

    Accepts ``[v6]`` brackets, zone ids (``%eth0`` or URL-encoded ``%25eth0``) and every IPv4
    spelling glibc's inet_aton accepts (``2130706433``, ``0x7f000001``, ``0177.0.0.1``, ``127.1``),
    because getaddrinfo would connect to those addresses without asking DNS.
    """
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if ":" in host:
        try:
            return ipaddress.IPv6Address(host.replace("%25", "%", 1))
        except ValueError:
            return None
    return _inet_aton(host)


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    parts = host.split(".")
    if not 1 <= len(parts) <= 4 or not all(_AT_PART.fullmatch(part) for part in parts):
        return None
    *leading, last = (_part_value(part) for part in parts)
    # The last part fills all remaining bytes: "127.1" is 127.0.0.1, "2130706433" is one 32-bit part.
    if any(value > 0xFF for value in leading) or last >= 1 << (8 * (5 - len(parts))):
        return None
    number = last
    for index, value in enumerate(leading):
        number |= value << (8 * (3 - index))
    return ipaddress.IPv4Address(number)


def _part_value(part: str) -> int:
    if part[:2] in ("0x", "0X"):
        return int(part[2:], 16)
    return int(part, 8 if part.startswith("0") else 10)


def forbidden_reason(address: Address, allowed: Sequence[Network] = ()) -> str | None:
    """Why ``address`` may not be called, as a phrase following it ("is a loopback address"),
    or None if it may. Pure; never raises.

    Anything not globally routable is refused. IPv6 addresses carrying an IPv4 address
    (mapped, NAT64, 6to4, IPv4-compatible) are judged by that IPv4 address too. An address,
    or its embedded IPv4 address, inside an ``allowed`` network is permitted: the operator wins.
    """
    if _in_any(address, allowed):
        return None
    if isinstance(address, ipaddress.IPv4Address):
        return _ipv4_reason(address)
    embedded = _embedded_ipv4(address)
    if embedded is not None:
        if _in_any(embedded, allowed):
            return None
        reason = _ipv4_reason(embedded)
        if reason is not None:
            return f"embeds {embedded}, which {reason}"
        if address in _MAPPED or address in _NAT64:
            return None
    return _ipv6_reason(address)


def _in_any(address: Address, networks: Sequence[Network]) -> bool:
    return any(address.version == network.version and address in network for network in networks)


def _ipv4_reason(address: ipaddress.IPv4Address) -> str | None:
    for network, reason in _V4_RANGES:
        if address in network:
            return reason
    return None if address.is_global else "is not a globally routable address"


def _ipv6_reason(address: ipaddress.IPv6Address) -> str | None:
    for network, reason in _V6_RANGES:
        if address in network:
            return reason
    if address not in _GLOBAL_UNICAST:
        return "is outside the global unicast range 2000::/3"
    return None if address.is_global else "is not a globally routable address"


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    if address in _MAPPED or address in _NAT64 or (address in _COMPATIBLE and int(address) > 1):
        return ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF)
    return address.sixtofour


async def check_target_url(
    url: str, allowed: Sequence[Network] = (), *, resolver: AbstractResolver | None = None
) -> None:
    """Save-time check of a webhook URL, called when a trigger is created or updated.

    Awaits DNS resolution (``resolver``, default aiohttp's ThreadedResolver; the caller owns
    a resolver it passes in). Raises ValueError naming the problem when the URL is not an
    absolute http(s) URL with a host; ForbiddenTarget when the host is, or resolves to any,
    forbidden address, or does not resolve at all.
    """
    host, port = _parse_target(url)
    guard = GuardedResolver(allowed, inner=resolver)
    try:
        results = await guard.resolve(host, port, socket.AF_UNSPEC)
    except ForbiddenTarget:
        raise
    except OSError as exc:
        raise ForbiddenTarget(host, "does not resolve") from exc
    finally:
        if resolver is None:
            await guard.close()
    if not results:
        raise ForbiddenTarget(host, "does not resolve")


def _parse_target(url: str) -> tuple[str, int]:
    # yarl is what aiohttp parses request URLs with, so both checks see the same host.
    try:
        parsed = URL(url)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"{url!r} is not a valid URL: {exc}") from None
    if not parsed.scheme:
        raise ValueError(f"{url!r} is not an absolute URL (expected http://host/...)")
    if parsed.scheme not in ("http", "https"):
        raise ValueError(f"{url!r} has scheme {parsed.scheme!r}; only http and https are allowed")
    if not parsed.raw_host:
        raise ValueError(f"{url!r} has no host")
    return parsed.raw_host, parsed.port or 0


class GuardedResolver(AbstractResolver):
    """Connect-time check: aiohttp connects only to the addresses this returns, so there is no
    DNS-rebinding window between check and connect.

    Literal numeric hosts (any inet_aton spelling) are judged without DNS and returned in
    canonical form; names are resolved by ``inner`` (default ThreadedResolver, created on first
    use) and refused as a whole if any address is forbidden. ``resolve`` awaits DNS and raises
    ForbiddenTarget, or whatever ``inner`` raises (OSError for a failed lookup).
    """

    def __init__(self, allowed: Sequence[Network] = (), inner: AbstractResolver | None = None) -> None:
        self._allowed = tuple(allowed)
        self._inner = inner

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        literal = literal_address(host)
        if literal is not None:
            _refuse_if_forbidden(host, str(literal), self._allowed, "means")
            return [_numeric_result(host, literal, port)]
        if self._inner is None:
            self._inner = ThreadedResolver()
        results = await self._inner.resolve(host, port, family)
        for result in results:
            _refuse_if_forbidden(host, result["host"], self._allowed, "resolves to")
        return results

    async def close(self) -> None:
        """Close the inner resolver, which this guard owns."""
        if self._inner is not None:
            await self._inner.close()


def _refuse_if_forbidden(host: str, found: str, allowed: Sequence[Network], verb: str) -> None:
    address = literal_address(found)
    if address is None:
        raise ForbiddenTarget(host, f"{verb} {found!r}, which is not an IP address")
    reason = forbidden_reason(address, allowed)
    if reason is not None:
        raise ForbiddenTarget(host, reason if str(address) == host else f"{verb} {address}, which {reason}")


def _numeric_result(host: str, address: Address, port: int) -> ResolveResult:
    family = socket.AF_INET if address.version == 4 else socket.AF_INET6
    flags = socket.AI_NUMERICHOST | socket.AI_NUMERICSERV
    return ResolveResult(hostname=host, host=str(address), port=port, family=family, proto=0, flags=flags)


def _guarded_socket(allowed: Sequence[Network]) -> aiohttp.SocketFactoryType:
    # The last word: judges the address the socket is opened to, including literal IP hosts
    # and proxies, which aiohttp connects to without asking the resolver.
    def create(addr_info: tuple[int, int, int, str, tuple[object, ...]]) -> socket.socket:
        family, kind, proto, _, sockaddr = addr_info
        _refuse_if_forbidden(str(sockaddr[0]), str(sockaddr[0]), allowed, "is")
        return socket.socket(family, kind, proto)

    return create


def guarded_connector(
    allowed: Sequence[Network] = (), *, limit_per_host: int = 0, ssl: bool | ssl_module.SSLContext = True
) -> aiohttp.TCPConnector:
    """A connector for webhook delivery that connects only to permitted addresses.

    Call inside the event loop (aiohttp requires one) when building the delivery session.
    A forbidden target makes the request raise ``aiohttp.ClientConnectorError`` whose
    ``os_error`` is ForbiddenTarget. DNS caching is off so every connect is judged afresh.
    """
    return aiohttp.TCPConnector(
        resolver=GuardedResolver(allowed),
        use_dns_cache=False,
        limit_per_host=limit_per_host,
        ssl=ssl,
        socket_factory=_guarded_socket(tuple(allowed)),
    )
