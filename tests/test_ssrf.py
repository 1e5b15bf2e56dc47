"""The SSRF guard: the address rules, the save-time URL check and the connect-time connector."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import string
from collections.abc import AsyncIterator

import aiohttp
import pytest
from aiohttp.abc import AbstractResolver, ResolveResult
from hypothesis import given
from hypothesis import strategies as st

from workers.triggers.ssrf import (
    ForbiddenTarget,
    GuardedResolver,
    Network,
    check_target_url,
    forbidden_reason,
    guarded_connector,
    literal_address,
    parse_allowed,
)

FORBIDDEN_HOSTS = [
    "127.0.0.1",
    "127.1",
    "127.0.1",
    "2130706433",
    "0x7f000001",
    "0177.0.0.1",
    "0x7f.0.0.1",
    "0.0.0.0",
    "10.1.2.3",
    "172.16.0.1",
    "192.168.1.1",
    "100.64.0.1",
    "100.100.100.200",
    "169.254.169.254",
    "224.0.0.1",
    "255.255.255.255",
    "240.0.0.1",
    "192.0.2.1",
    "[::1]",
    "[::]",
    "[fe80::1]",
    "[fe80::1%25eth0]",
    "[fec0::1]",
    "[fc00::1]",
    "[fd12::1]",
    "[ff02::1]",
    "[::ffff:127.0.0.1]",
    "[::ffff:7f00:1]",
    "[::ffff:169.254.169.254]",
    "[::7f00:1]",
    "[::8.8.8.8]",
    "[64:ff9b::7f00:1]",
    "[64:ff9b::a00:1]",
    "[2002:7f00:1::]",
    "[2002:a9fe:a9fe::1]",
    "[2001:0:4136:e378:8000:63bf:3fff:fdd2]",
    "[2001:db8::1]",
]
PUBLIC_HOSTS = ["93.184.216.34", "8.8.8.8", "[2606:4700::1111]", "[::ffff:93.184.216.34]", "[64:ff9b::808:808]"]

# IPv4 ranges that are not globally reachable (IANA special-purpose registry, RFC 6890 and
# successors), plus multicast; written out here so the rule is not checked against itself.
NOT_GLOBAL_V4 = parse_allowed(
    [
        "0.0.0.0/8",
        "10.0.0.0/8",
        "100.64.0.0/10",
        "127.0.0.0/8",
        "169.254.0.0/16",
        "172.16.0.0/12",
        "192.0.0.0/24",
        "192.0.2.0/24",
        "192.168.0.0/16",
        "198.18.0.0/15",
        "198.51.100.0/24",
        "203.0.113.0/24",
        "224.0.0.0/4",
        "240.0.0.0/4",
    ]
)
LOOPBACK = parse_allowed(["127.0.0.0/8"])


class FakeResolver(AbstractResolver):
    """Answers from a fixed table, like a DNS server we control (a rebinding attacker's)."""

    def __init__(self, answers: dict[str, list[str]]) -> None:
        self.answers = answers
        self.closed = False

    async def resolve(
        self, host: str, port: int = 0, family: socket.AddressFamily = socket.AF_INET
    ) -> list[ResolveResult]:
        if host not in self.answers:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [
            ResolveResult(
                hostname=host,
                host=address,
                port=port,
                family=socket.AF_INET6 if ":" in address else socket.AF_INET,
                proto=0,
                flags=0,
            )
            for address in self.answers[host]
        ]

    async def close(self) -> None:
        self.closed = True


@pytest.mark.parametrize("host", FORBIDDEN_HOSTS)
async def test_forbidden_literal_hosts_are_refused(host: str) -> None:
    with pytest.raises(ForbiddenTarget) as refused:
        await check_target_url(f"http://{host}:8080/hook")
    assert str(refused.value) == f"{refused.value.host} {refused.value.reason}"  # yarl may normalise the host


@pytest.mark.parametrize("host", PUBLIC_HOSTS)
async def test_public_literal_hosts_are_allowed(host: str) -> None:
    await check_target_url(f"https://{host}/hook")


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("2130706433", "127.0.0.1"),
        ("0x7f000001", "127.0.0.1"),
        ("0X7F.1", "127.0.0.1"),
        ("0177.0.0.1", "127.0.0.1"),
        ("127.1", "127.0.0.1"),
        ("127.0.1", "127.0.0.1"),
        ("1.0xffffff", "1.255.255.255"),
        ("[::1]", "::1"),
        ("::ffff:127.0.0.1", "::ffff:7f00:1"),
        ("[fe80::1%25eth0]", "fe80::1%eth0"),
        ("fe80::1%eth0", "fe80::1%eth0"),
    ],
)
def test_literal_address_reads_every_numeric_spelling(host: str, expected: str) -> None:
    assert str(literal_address(host)) == expected


NOT_LITERAL = ["example.com", "localhost", "0x", "08", "1.2.3.256", "1.2.3.4.", "4294967296", "[g::]"]


@pytest.mark.parametrize("host", NOT_LITERAL)
def test_literal_address_is_none_for_names_and_bad_numbers(host: str) -> None:
    assert literal_address(host) is None


def test_messages_name_host_address_and_reason() -> None:
    assert forbidden_reason(ipaddress.ip_address("127.0.0.1")) == "is a loopback address"
    assert str(ForbiddenTarget("127.0.0.1", "is a loopback address")) == "127.0.0.1 is a loopback address"
    assert forbidden_reason(ipaddress.ip_address("::ffff:7f00:1")) == "embeds 127.0.0.1, which is a loopback address"


async def test_non_canonical_literal_message_names_the_address() -> None:
    with pytest.raises(ForbiddenTarget, match=r"^0x7f000001 means 127\.0\.0\.1, which is a loopback address$"):
        await check_target_url("http://0x7f000001/")


@pytest.mark.parametrize("host", ["127.0.0.1", "127.1", "0x7f000001", "[::ffff:127.0.0.1]", "[64:ff9b::7f00:1]"])
async def test_allowlist_permits_loopback_and_its_embeddings(host: str) -> None:
    await check_target_url(f"http://{host}/hook", LOOPBACK)


async def test_allowlist_is_per_network() -> None:
    with pytest.raises(ForbiddenTarget, match="private"):
        await check_target_url("http://10.0.0.1/", LOOPBACK)
    await check_target_url("http://10.0.0.1/", parse_allowed(["10.1.2.3/8"]))


def test_parse_allowed_names_the_bad_entry() -> None:
    assert parse_allowed([" 10.0.0.0/8", "fd00::/8 "]) == (
        ipaddress.ip_network("10.0.0.0/8"),
        ipaddress.ip_network("fd00::/8"),
    )
    with pytest.raises(ValueError, match="'intranet'"):
        parse_allowed(["intranet"])


@pytest.mark.parametrize(
    ("answers", "verdict"),
    [
        (["93.184.216.34"], None),
        (["93.184.216.34", "2606:4700::1111"], None),
        (["93.184.216.34", "10.0.0.5"], "resolves to 10.0.0.5, which is a private address"),
        (["2606:4700::1111", "::1"], "resolves to ::1, which is a loopback address"),
        (["169.254.169.254"], "resolves to 169.254.169.254, which is a link-local address"),
        (["not-an-address"], "resolves to 'not-an-address', which is not an IP address"),
    ],
)
async def test_names_are_refused_if_any_address_is_forbidden(answers: list[str], verdict: str | None) -> None:
    resolver = FakeResolver({"hook.example": answers})
    if verdict is None:
        await check_target_url("https://hook.example/x", resolver=resolver)
    else:
        with pytest.raises(ForbiddenTarget) as refused:
            await check_target_url("https://hook.example/x", resolver=resolver)
        assert str(refused.value) == f"hook.example {verdict}"
    assert not resolver.closed, "a resolver passed in belongs to the caller"


async def test_allowlist_applies_to_resolved_addresses() -> None:
    resolver = FakeResolver({"receiver.cluster.local": ["10.0.3.4"]})
    await check_target_url("http://receiver.cluster.local/", parse_allowed(["10.0.0.0/8"]), resolver=resolver)


@pytest.mark.parametrize("resolver", [FakeResolver({}), None], ids=["fake", "system"])
async def test_unresolvable_names_are_refused(resolver: AbstractResolver | None) -> None:
    with pytest.raises(ForbiddenTarget) as refused:
        await check_target_url("https://nonexistent.invalid/hook", resolver=resolver)
    assert (refused.value.host, refused.value.reason) == ("nonexistent.invalid", "does not resolve")


async def test_localhost_is_refused_by_the_system_resolver() -> None:
    with pytest.raises(ForbiddenTarget, match=r"^localhost resolves to .*loopback"):
        await check_target_url("http://localhost:8080/")


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("ftp://example.com/x", "scheme 'ftp'"),
        ("file:///etc/passwd", "scheme 'file'"),
        ("http:///path", "no host"),
        ("/relative/path", "not an absolute URL"),
        ("example.com/hook", "not an absolute URL"),
        ("http://:80/", "not a valid URL"),
    ],
)
async def test_bad_urls_raise_value_error(url: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem) as raised:
        await check_target_url(url)
    assert not isinstance(raised.value, ForbiddenTarget)


async def test_resolver_returns_canonical_literal() -> None:
    resolved = await GuardedResolver(LOOPBACK, inner=FakeResolver({})).resolve("0x7f000001", 80)
    assert [(r["host"], r["port"], r["family"]) for r in resolved] == [("127.0.0.1", 80, socket.AF_INET)]


async def test_resolver_closes_its_inner_resolver() -> None:
    inner = FakeResolver({})
    await GuardedResolver(inner=inner).close()
    assert inner.closed


# --- connect time, against a real local server ---------------------------------------------


class CountingServer:
    """A real HTTP/1.1 server on 127.0.0.1 that counts TCP connections it accepts."""

    def __init__(self) -> None:
        self.connections = 0
        self.port = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
        await writer.drain()
        writer.close()


@pytest.fixture
async def local_server() -> AsyncIterator[CountingServer]:
    counting = CountingServer()
    server = await asyncio.start_server(counting.handle, "127.0.0.1", 0)
    counting.port = server.sockets[0].getsockname()[1]
    async with server:
        yield counting


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0x7f000001", "2130706433", "127.1"])
async def test_connector_refuses_loopback_without_connecting(local_server: CountingServer, host: str) -> None:
    async with aiohttp.ClientSession(connector=guarded_connector()) as session:
        # 127.1 and 2130706433 are refused by aiohttp itself (InvalidUrlClientError) before ours.
        with pytest.raises((aiohttp.ClientConnectorError, aiohttp.InvalidUrlClientError)) as refused:
            await session.get(f"http://{host}:{local_server.port}/")
    if isinstance(refused.value, aiohttp.ClientConnectorError):
        assert isinstance(refused.value.os_error, ForbiddenTarget)
        assert "loopback" in str(refused.value)
    assert local_server.connections == 0


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "0x7f000001"])
async def test_connector_allows_allowlisted_network(local_server: CountingServer, host: str) -> None:
    async with (
        aiohttp.ClientSession(connector=guarded_connector(LOOPBACK)) as session,
        session.get(f"http://{host}:{local_server.port}/") as response,
    ):
        assert (response.status, await response.text()) == (200, "ok")
    assert local_server.connections == 1


# --- properties -----------------------------------------------------------------------------

ipv4 = st.one_of(
    st.ip_addresses(v=4),
    st.sampled_from(NOT_GLOBAL_V4).flatmap(lambda network: st.ip_addresses(network=network)),
)


@given(ipv4)
def test_ipv4_refused_exactly_when_not_globally_reachable(address: ipaddress.IPv4Address) -> None:
    refused = forbidden_reason(address) is not None
    assert refused == any(address in network for network in NOT_GLOBAL_V4)
    if not refused:
        assert address.is_global and not address.is_multicast


@given(ipv4, st.sampled_from([(), LOOPBACK, parse_allowed(["10.0.0.0/8", "169.254.0.0/16"])]))
def test_translated_forms_get_the_ipv4_verdict(address: ipaddress.IPv4Address, allowed: tuple[Network, ...]) -> None:
    verdict = forbidden_reason(address, allowed) is None
    mapped = ipaddress.IPv6Address(f"::ffff:{address}")
    nat64 = ipaddress.IPv6Address(f"64:ff9b::{address}")
    six_to_four = ipaddress.IPv6Address((0x2002 << 112) | (int(address) << 80) | 1)
    assert (forbidden_reason(mapped, allowed) is None) == verdict
    assert (forbidden_reason(nat64, allowed) is None) == verdict
    assert (forbidden_reason(six_to_four, allowed) is None) == verdict


@given(st.ip_addresses(v=6))
def test_ipv6_allowed_only_in_global_unicast(address: ipaddress.IPv6Address) -> None:
    if forbidden_reason(address) is None and address.ipv4_mapped is None:
        assert address in ipaddress.IPv6Network("2000::/3") or address in ipaddress.IPv6Network("64:ff9b::/96")
        assert not address.is_multicast and not address.is_link_local and not address.is_site_local


@given(st.ip_addresses(), st.integers(min_value=0, max_value=32))
def test_allowlist_wins(address: ipaddress.IPv4Address | ipaddress.IPv6Address, prefix: int) -> None:
    network = ipaddress.ip_network(f"{address}/{prefix if address.version == 4 else prefix * 4}", strict=False)
    assert forbidden_reason(address, [network]) is None


inet_aton_part = st.text(alphabet=string.digits + "abcdefxX", min_size=1, max_size=11)


@given(st.lists(inet_aton_part, min_size=1, max_size=4).map(".".join))
def test_literal_ipv4_matches_glibc_inet_aton(host: str) -> None:
    try:
        expected: ipaddress.IPv4Address | None = ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        expected = None
    assert literal_address(host) == expected
