"""IAM condition operators: every operator, IfExists, absent keys, IPv4/IPv6 CIDRs and dates."""

from __future__ import annotations

import fnmatch
import ipaddress
import time
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.iam import grammar
from workers.iam.conditions import OPERATOR_NAMES, instant, parse_condition
from workers.iam.policy import AccessRequest, PolicyError, evaluate, parse_policy
from workers.iam.urn import glob_matcher, matches_any

RESOURCE = "swr:region-a:acc1:repo:team/api"
ALICE = {"g:UserName": "alice"}
T0 = "2026-01-01T00:00:00Z"


def allowed(condition: dict[str, Any], context: dict[str, str]) -> bool:
    """Whether an Allow statement with ``condition`` applies to a request with ``context``."""
    statement = {"Effect": "Allow", "Action": "swr:repo:getRepo", "Condition": condition}
    policy = parse_policy({"Version": "1.1", "Statement": [statement]}, name="p")
    return evaluate(AccessRequest("swr:repo:getRepo", RESOURCE, context), [policy]).allowed


def ip(value: str) -> dict[str, str]:
    return {"g:SourceIp": value}


def at(value: str) -> dict[str, str]:
    return {"g:CurrentTime": value}


STRING_CASES = [
    ({"StringEquals": {"g:UserName": "alice"}}, ALICE, True),
    ({"StringEquals": {"g:UserName": "alice"}}, {"g:UserName": "Alice"}, False),
    ({"StringEquals": {"g:UserName": ["bob", "alice"]}}, ALICE, True),
    ({"StringEquals": {"g:UserName": ["bob", "carol"]}}, ALICE, False),
    ({"StringEquals": {"g:UserName": "alice"}}, {}, False),
    ({"StringEquals": {"G:USERNAME": "alice"}}, ALICE, True),
    ({"StringEquals": {"g:UserName": "alice"}}, {"G:USERNAME": "alice"}, True),
    ({"StringEquals": {"g:UserName": ""}}, {"g:UserName": ""}, True),
    ({"StringEqualsIfExists": {"g:UserName": "alice"}}, {}, True),
    ({"StringEqualsIfExists": {"g:UserName": "alice"}}, {"g:UserName": "bob"}, False),
    ({"StringEqualsIfExists": {"g:UserName": "alice"}}, ALICE, True),
    ({"StringNotEquals": {"g:UserName": "alice"}}, ALICE, False),
    ({"StringNotEquals": {"g:UserName": "alice"}}, {"g:UserName": "bob"}, True),
    ({"StringNotEquals": {"g:UserName": "alice"}}, {}, True),
    ({"StringNotEquals": {"g:UserName": ["alice", "bob"]}}, {"g:UserName": "bob"}, False),
    ({"StringNotEquals": {"g:UserName": ["alice", "bob"]}}, {"g:UserName": "carol"}, True),
    ({"StringNotEqualsIfExists": {"g:UserName": "alice"}}, {}, True),
    ({"StringNotEqualsIfExists": {"g:UserName": "alice"}}, ALICE, False),
    ({"StringEqualsIgnoreCase": {"g:UserName": "ALICE"}}, ALICE, True),
    ({"StringEqualsIgnoreCase": {"g:UserName": "ALICE"}}, {"g:UserName": "bob"}, False),
    ({"StringEqualsIgnoreCase": {"g:UserName": "alice"}}, {}, False),
    ({"StringEqualsIgnoreCaseIfExists": {"g:UserName": "alice"}}, {}, True),
    ({"StringNotEqualsIgnoreCase": {"g:ServiceName": "IAM"}}, {"g:ServiceName": "iam"}, False),
    ({"StringNotEqualsIgnoreCase": {"g:ServiceName": "IAM"}}, {"g:ServiceName": "swr"}, True),
    ({"StringNotEqualsIgnoreCase": {"g:ServiceName": "IAM"}}, {}, True),
    ({"StringNotEqualsIgnoreCaseIfExists": {"g:ServiceName": "IAM"}}, {"g:ServiceName": "Iam"}, False),
    ({"StringLike": {"g:UserName": "team-*"}}, {"g:UserName": "team-a"}, True),
    ({"StringLike": {"g:UserName": "team-*"}}, {"g:UserName": "team-"}, True),
    ({"StringLike": {"g:UserName": "team-*"}}, {"g:UserName": "xteam-a"}, False),
    ({"StringLike": {"g:UserName": "team-?"}}, {"g:UserName": "team-ab"}, False),
    ({"StringLike": {"g:UserName": "team-??"}}, {"g:UserName": "team-ab"}, True),
    ({"StringLike": {"g:UserName": "*"}}, {"g:UserName": ""}, True),
    ({"StringLike": {"g:UserName": "?"}}, {"g:UserName": ""}, False),
    ({"StringLike": {"g:UserName": ["a*", "b*"]}}, {"g:UserName": "bx"}, True),
    ({"StringLike": {"g:UserName": "Team-*"}}, {"g:UserName": "team-a"}, False),
    ({"StringLike": {"g:UserName": "a.b"}}, {"g:UserName": "axb"}, False),
    ({"StringLike": {"g:UserName": "a[b]"}}, {"g:UserName": "a[b]"}, True),
    ({"StringLike": {"g:UserName": "*"}}, {}, False),
    ({"StringLikeIfExists": {"g:UserName": "team-*"}}, {}, True),
    ({"StringLikeIfExists": {"g:UserName": "team-*"}}, {"g:UserName": "ops"}, False),
    ({"StringNotLike": {"g:UserName": "team-*"}}, {"g:UserName": "team-a"}, False),
    ({"StringNotLike": {"g:UserName": "team-*"}}, {"g:UserName": "ops"}, True),
    ({"StringNotLike": {"g:UserName": "team-*"}}, {}, True),
    ({"StringNotLike": {"g:UserName": ["team-*", "ops*"]}}, {"g:UserName": "ops1"}, False),
    ({"StringNotLikeIfExists": {"g:UserName": "team-*"}}, {}, True),
]

BOOL_AND_NULL_CASES = [
    ({"Bool": {"g:MFAPresent": True}}, {"g:MFAPresent": "true"}, True),
    ({"Bool": {"g:MFAPresent": "true"}}, {"g:MFAPresent": "True"}, True),
    ({"Bool": {"g:MFAPresent": False}}, {"g:MFAPresent": "true"}, False),
    ({"Bool": {"g:MFAPresent": "false"}}, {"g:MFAPresent": "false"}, True),
    ({"Bool": {"g:MFAPresent": True}}, {}, False),
    ({"Bool": {"g:MFAPresent": True}}, {"g:MFAPresent": "yes"}, False),
    ({"Bool": {"g:MFAPresent": [True, False]}}, {"g:MFAPresent": "false"}, True),
    ({"BoolIfExists": {"g:MFAPresent": True}}, {}, True),
    ({"BoolIfExists": {"g:MFAPresent": True}}, {"g:MFAPresent": "false"}, False),
    ({"Null": {"g:UserName": "true"}}, {}, True),
    ({"Null": {"g:UserName": True}}, ALICE, False),
    ({"Null": {"g:UserName": False}}, ALICE, True),
    ({"Null": {"g:UserName": "false"}}, {}, False),
    ({"Null": {"g:UserName": [True, False]}}, ALICE, True),
    ({"Null": {"g:UserName": [True, False]}}, {}, True),
]

IP_CASES = [
    ({"IpAddress": {"g:SourceIp": "10.0.0.0/8"}}, ip("10.1.2.3"), True),
    ({"IpAddress": {"g:SourceIp": "10.0.0.0/8"}}, ip("11.0.0.1"), False),
    ({"IpAddress": {"g:SourceIp": "192.0.2.7"}}, ip("192.0.2.7"), True),
    ({"IpAddress": {"g:SourceIp": "192.0.2.7"}}, ip("192.0.2.8"), False),
    ({"IpAddress": {"g:SourceIp": "192.0.2.7/32"}}, ip("192.0.2.7"), True),
    ({"IpAddress": {"g:SourceIp": "10.0.0.0/31"}}, ip("10.0.0.1"), True),
    ({"IpAddress": {"g:SourceIp": "10.0.0.0/31"}}, ip("10.0.0.2"), False),
    ({"IpAddress": {"g:SourceIp": "10.1.2.3/8"}}, ip("10.200.0.1"), True),  # host bits set: still 10/8
    ({"IpAddress": {"g:SourceIp": "0.0.0.0/0"}}, ip("203.0.113.9"), True),
    ({"IpAddress": {"g:SourceIp": "0.0.0.0/0"}}, ip("2001:db8::1"), False),
    ({"IpAddress": {"g:SourceIp": "2001:db8::/32"}}, ip("2001:db8:1::1"), True),
    ({"IpAddress": {"g:SourceIp": "2001:db8::/32"}}, ip("2001:db9::1"), False),
    ({"IpAddress": {"g:SourceIp": "2001:DB8::/32"}}, ip("2001:db8::abcd"), True),
    ({"IpAddress": {"g:SourceIp": "2001:db8::1"}}, ip("2001:0db8:0000:0000:0000:0000:0000:0001"), True),
    ({"IpAddress": {"g:SourceIp": "::/0"}}, ip("::1"), True),
    ({"IpAddress": {"g:SourceIp": "::/0"}}, ip("10.0.0.1"), False),
    ({"IpAddress": {"g:SourceIp": "10.0.0.0/8"}}, ip("::ffff:10.0.0.1"), True),  # IPv4-mapped
    ({"IpAddress": {"g:SourceIp": "::ffff:10.0.0.0/104"}}, ip("10.5.5.5"), True),
    ({"IpAddress": {"g:SourceIp": "::/0"}}, ip("::ffff:10.0.0.1"), True),  # and as IPv6
    ({"IpAddress": {"g:SourceIp": "10.0.0.0/8"}}, ip("::ffff:11.0.0.1"), False),
    ({"IpAddress": {"g:SourceIp": ["192.0.2.0/24", "2001:db8::/32"]}}, ip("2001:db8::5"), True),
    ({"IpAddress": {"g:SourceIp": ["192.0.2.0/24", "2001:db8::/32"]}}, ip("198.51.100.1"), False),
    ({"IpAddress": {"g:SourceIp": "10.0.0.0/8"}}, {}, False),
    ({"IpAddress": {"g:SourceIp": "10.0.0.0/8"}}, ip("not-an-ip"), False),
    ({"IpAddress": {"g:SourceIp": "10.0.0.0/8"}}, ip("10.0.0.1/32"), False),
    ({"IpAddressIfExists": {"g:SourceIp": "10.0.0.0/8"}}, {}, True),
    ({"IpAddressIfExists": {"g:SourceIp": "10.0.0.0/8"}}, ip("11.0.0.1"), False),
    ({"NotIpAddress": {"g:SourceIp": "10.0.0.0/8"}}, ip("10.1.1.1"), False),
    ({"NotIpAddress": {"g:SourceIp": "10.0.0.0/8"}}, ip("11.1.1.1"), True),
    ({"NotIpAddress": {"g:SourceIp": "10.0.0.0/8"}}, {}, True),
    ({"NotIpAddress": {"g:SourceIp": "10.0.0.0/8"}}, ip("garbage"), True),
    ({"NotIpAddress": {"g:SourceIp": ["10.0.0.0/8", "2001:db8::/32"]}}, ip("2001:db8::1"), False),
    ({"NotIpAddressIfExists": {"g:SourceIp": "10.0.0.0/8"}}, {}, True),
    ({"NotIpAddressIfExists": {"g:SourceIp": "10.0.0.0/8"}}, ip("10.0.0.9"), False),
]

DATE_CASES = [
    ({"DateLessThan": {"g:CurrentTime": T0}}, at("2025-12-31T23:59:59Z"), True),
    ({"DateLessThan": {"g:CurrentTime": T0}}, at(T0), False),
    ({"DateLessThan": {"g:CurrentTime": T0}}, at("2026-01-01T07:00:00+08:00"), True),  # 23:00Z the day before
    ({"DateLessThan": {"g:CurrentTime": T0}}, at("2026-01-01T09:00:00+08:00"), False),
    ({"DateLessThan": {"g:CurrentTime": "2026-01-01"}}, at("2025-12-31T23:59:59.999999Z"), True),
    ({"DateLessThan": {"g:CurrentTime": ["2020-01-01", "2030-01-01"]}}, at("2025-06-01T00:00:00Z"), True),
    ({"DateLessThan": {"g:CurrentTime": T0}}, {}, False),
    ({"DateLessThan": {"g:CurrentTime": T0}}, at("yesterday"), False),
    ({"DateLessThanIfExists": {"g:CurrentTime": T0}}, {}, True),
    ({"DateLessThanIfExists": {"g:CurrentTime": T0}}, at("2027-01-01T00:00:00Z"), False),
    ({"DateLessThanEquals": {"g:CurrentTime": T0}}, at(T0), True),
    ({"DateLessThanEquals": {"g:CurrentTime": T0}}, at("2026-01-01T00:00:00.000001Z"), False),
    ({"DateGreaterThan": {"g:CurrentTime": T0}}, at("2026-01-01T00:00:01Z"), True),
    ({"DateGreaterThan": {"g:CurrentTime": T0}}, at(T0), False),
    ({"DateGreaterThan": {"g:CurrentTime": T0}}, {}, False),
    ({"DateGreaterThanIfExists": {"g:CurrentTime": T0}}, {}, True),
    ({"DateGreaterThanEquals": {"g:CurrentTime": T0}}, at(T0), True),
    ({"DateGreaterThanEquals": {"g:CurrentTime": T0}}, at("2025-12-31T23:59:59Z"), False),
    ({"DateEquals": {"g:CurrentTime": "2026-01-01"}}, at(T0), True),  # a date is its UTC midnight
    ({"DateEquals": {"g:CurrentTime": "2026-01-01"}}, at("2026-01-01T00:00:01Z"), False),
    ({"DateEquals": {"g:CurrentTime": T0}}, at("2026-01-01T00:00:00"), True),  # naive context is UTC
    ({"DateEquals": {"g:CurrentTime": "2026-01-01T08:00+08:00"}}, at(T0), True),
    ({"DateNotEquals": {"g:CurrentTime": T0}}, at(T0), False),
    ({"DateNotEquals": {"g:CurrentTime": T0}}, at("2026-01-02T00:00:00Z"), True),
    ({"DateNotEquals": {"g:CurrentTime": T0}}, {}, True),
    ({"DateNotEqualsIfExists": {"g:CurrentTime": T0}}, {}, True),
    ({"DateGreaterThan": {"aws:EpochTime": "2024-02-29"}}, {"aws:EpochTime": "2024-03-01"}, True),  # any key
]

COMBINED_CASES = [
    ({}, {}, True),
    ({"StringEquals": {"g:UserName": "alice", "g:UserId": "u1"}}, {"g:UserName": "alice", "g:UserId": "u1"}, True),
    ({"StringEquals": {"g:UserName": "alice", "g:UserId": "u1"}}, {"g:UserName": "alice", "g:UserId": "u2"}, False),
    ({"StringEquals": {"g:UserName": "alice", "g:UserId": "u1"}}, ALICE, False),
    (
        {"StringEquals": {"g:UserName": "alice"}, "IpAddress": {"g:SourceIp": "10.0.0.0/8"}},
        ALICE | ip("10.0.0.1"),
        True,
    ),
    (
        {"StringEquals": {"g:UserName": "alice"}, "IpAddress": {"g:SourceIp": "10.0.0.0/8"}},
        ALICE | ip("11.0.0.1"),
        False,
    ),
    ({"StringEquals": {"g:UserName": "alice"}, "IpAddress": {"g:SourceIp": "10.0.0.0/8"}}, ip("10.0.0.1"), False),
    (
        {"StringEquals": {"g:UserName": "alice"}, "IpAddressIfExists": {"g:SourceIp": "10.0.0.0/8"}},
        ALICE,
        True,
    ),
    (
        {"StringEquals": {"swr:TargetRegion": "region-b"}, "DateLessThan": {"g:CurrentTime": T0}},
        {"swr:targetregion": "region-b", "g:currenttime": "2025-01-01T00:00:00Z"},
        True,
    ),
    ({"StringEquals": {"g:UserName": "alice", "G:UserName": "alice"}}, ALICE, True),
    ({"StringEquals": {"g:UserName": "alice", "G:UserName": "bob"}}, ALICE, False),  # same key twice: AND
]


@pytest.mark.parametrize(
    ("condition", "context", "expected"),
    STRING_CASES + BOOL_AND_NULL_CASES + IP_CASES + DATE_CASES + COMBINED_CASES,
)
def test_condition(condition: dict[str, Any], context: dict[str, str], expected: bool) -> None:
    assert allowed(condition, context) is expected


@pytest.mark.parametrize(
    ("condition", "field"),
    [
        ([], "Statement[0].Condition"),
        ("x", "Statement[0].Condition"),
        ({"StringFoo": {"g:UserName": "a"}}, "Statement[0].Condition.StringFoo"),
        ({"stringequals": {"g:UserName": "a"}}, "Statement[0].Condition.stringequals"),
        ({"NullIfExists": {"g:UserName": "true"}}, "Statement[0].Condition.NullIfExists"),
        ({"ForAnyValue:StringEquals": {"g:UserName": "a"}}, "Statement[0].Condition.ForAnyValue:StringEquals"),
        ({"StringEquals": {}}, "Statement[0].Condition.StringEquals"),
        ({"StringEquals": []}, "Statement[0].Condition.StringEquals"),
        ({"StringEquals": {"UserName": "a"}}, "Statement[0].Condition.StringEquals.UserName"),
        ({"StringEquals": {"g:User Name": "a"}}, "Statement[0].Condition.StringEquals.g:User Name"),
        ({"StringEquals": {"g:UserName": []}}, "Statement[0].Condition.StringEquals.g:UserName"),
        ({"StringEquals": {"g:UserName": 5}}, "Statement[0].Condition.StringEquals.g:UserName"),
        ({"StringEquals": {"g:UserName": ["a", 1]}}, "Statement[0].Condition.StringEquals.g:UserName[1]"),
        ({"StringEquals": {"g:UserName": [["a"]]}}, "Statement[0].Condition.StringEquals.g:UserName[0]"),
        ({"StringEquals": {"g:UserName": "a\nb"}}, "Statement[0].Condition.StringEquals.g:UserName"),
        ({"StringEquals": {"g:UserName": "x" * 1025}}, "Statement[0].Condition.StringEquals.g:UserName"),
        ({"IpAddress": {"g:SourceIp": "10.0.0.0/33"}}, "Statement[0].Condition.IpAddress.g:SourceIp"),
        ({"IpAddress": {"g:SourceIp": ["10.0.0.1", "999.1.1.1"]}}, "Statement[0].Condition.IpAddress.g:SourceIp[1]"),
        ({"IpAddress": {"g:SourceIp": "010.0.0.1"}}, "Statement[0].Condition.IpAddress.g:SourceIp"),
        ({"IpAddress": {"g:SourceIp": "2001:db8:::1"}}, "Statement[0].Condition.IpAddress.g:SourceIp"),
        ({"IpAddress": {"g:SourceIp": "2001:db8::/129"}}, "Statement[0].Condition.IpAddress.g:SourceIp"),
        ({"IpAddress": {"g:SourceIp": "fe80::1%eth0"}}, "Statement[0].Condition.IpAddress.g:SourceIp"),
        ({"NotIpAddress": {"g:SourceIp": "localhost"}}, "Statement[0].Condition.NotIpAddress.g:SourceIp"),
        ({"DateLessThan": {"g:CurrentTime": "2023-02-29"}}, "Statement[0].Condition.DateLessThan.g:CurrentTime"),
        ({"DateLessThan": {"g:CurrentTime": "2024-04-31"}}, "Statement[0].Condition.DateLessThan.g:CurrentTime"),
        ({"DateLessThan": {"g:CurrentTime": "2024-01-01 10:00"}}, "Statement[0].Condition.DateLessThan.g:CurrentTime"),
        ({"DateLessThan": {"g:CurrentTime": "0000-01-01"}}, "Statement[0].Condition.DateLessThan.g:CurrentTime"),
        ({"DateLessThan": {"g:CurrentTime": 1700000000}}, "Statement[0].Condition.DateLessThan.g:CurrentTime"),
        (
            {"DateGreaterThan": {"g:CurrentTime": "2024-01-01T24:00"}},
            "Statement[0].Condition.DateGreaterThan.g:CurrentTime",
        ),
        ({"Bool": {"g:MFAPresent": "yes"}}, "Statement[0].Condition.Bool.g:MFAPresent"),
        ({"Bool": {"g:MFAPresent": 1}}, "Statement[0].Condition.Bool.g:MFAPresent"),
        ({"Bool": {"g:MFAPresent": "TRUE"}}, "Statement[0].Condition.Bool.g:MFAPresent"),
        ({"Null": {"g:UserName": None}}, "Statement[0].Condition.Null.g:UserName"),
    ],
)
def test_bad_condition_names_the_field(condition: object, field: str) -> None:
    statement = {"Effect": "Allow", "Action": "swr:repo:getRepo", "Condition": condition}
    with pytest.raises(PolicyError) as raised:
        parse_policy({"Version": "1.1", "Statement": [statement]})
    assert raised.value.field == field


def test_operator_names_are_the_schema_families() -> None:
    families = [
        grammar.STRING_OPERATORS,
        grammar.DATE_OPERATORS,
        grammar.IP_OPERATORS,
        grammar.BOOL_OPERATORS,
        grammar.NULL_OPERATORS,
    ]
    bases = ["String", "Date", "IpAddress", "NotIpAddress", "Bool", "Null"]
    suffixes = [
        "Equals",
        "NotEquals",
        "EqualsIgnoreCase",
        "NotEqualsIgnoreCase",
        "Like",
        "NotLike",
        "LessThan",
        "LessThanEquals",
        "GreaterThan",
        "GreaterThanEquals",
        "",
    ]
    candidates = {b + s + e for b in bases for s in suffixes for e in ("", "IfExists")}
    import re

    by_schema = {name for name in candidates if any(re.search(f, name) for f in families)}
    assert by_schema == OPERATOR_NAMES
    assert len(OPERATOR_NAMES) == 31


def test_clause_keeps_what_was_written() -> None:
    [clause] = parse_condition({"StringLikeIfExists": {"G:UserName": ["a*", "b"]}}, "Condition")
    assert (clause.operator, clause.key, clause.values, clause.lookup) == (
        "StringLikeIfExists",
        "G:UserName",
        ("a*", "b"),
        "g:username",
    )


# --- properties ----------------------------------------------------------------------------

GLOBS = st.text(alphabet="ab*?", max_size=8)
VALUES = st.text(alphabet="ab", max_size=10)


@given(GLOBS, VALUES)
def test_wildcards_agree_with_fnmatch(pattern: str, value: str) -> None:
    expected = fnmatch.fnmatchcase(value, pattern)
    assert matches_any([pattern], value) is expected
    assert glob_matcher(pattern)(value) is expected  # the fast shapes: literal, "a*", "*a", regex


@given(st.lists(GLOBS, min_size=1, max_size=3), VALUES)
def test_string_like_is_any_pattern(patterns: list[str], value: str) -> None:
    expected = any(fnmatch.fnmatchcase(value, p) for p in patterns)
    assert allowed({"StringLike": {"g:UserName": patterns}}, {"g:UserName": value}) is expected
    assert allowed({"StringNotLike": {"g:UserName": patterns}}, {"g:UserName": value}) is not expected


def test_wildcards_do_not_backtrack_exponentially() -> None:
    pattern = "*a" * 30 + "*b"
    match = glob_matcher(pattern)
    started = time.perf_counter()
    assert not match("a" * 5000)
    assert match("a" * 5000 + "b")
    assert time.perf_counter() - started < 1.0


ADDRESSES = st.one_of(st.ip_addresses(v=4), st.ip_addresses(v=6).filter(lambda a: a.ipv4_mapped is None))


@given(ADDRESSES, st.integers(min_value=0, max_value=128), st.booleans())
def test_every_address_and_cidr_is_accepted(addr: Any, prefix: int, exploded: bool) -> None:
    text = addr.exploded if exploded else str(addr)
    assert grammar.conforms("ip", text)
    block = f"{text}/{prefix % (addr.max_prefixlen + 1)}"
    assert grammar.conforms("ip", block)
    network = ipaddress.ip_network(block, strict=False)
    assert allowed({"IpAddress": {"g:SourceIp": block}}, ip(str(addr))) is (addr in network)
    assert allowed({"NotIpAddress": {"g:SourceIp": block}}, ip(str(addr))) is (addr not in network)


IP_TOKENS = st.sampled_from(
    ["1", "ff", "0", "abcd", "12345", ":", "::", ".", "1.2.3.4", "/", "64", "/128", "g", "00", "256"]
)


@given(st.lists(IP_TOKENS, min_size=1, max_size=12).map("".join))
def test_what_the_ip_pattern_accepts_is_an_address(text: str) -> None:
    if grammar.conforms("ip", text):
        ipaddress.ip_network(text, strict=False)


@given(st.datetimes(min_value=datetime(1, 1, 2), timezones=st.none() | st.just(UTC)), st.sampled_from(["", "d", "m"]))
def test_every_iso_date_is_accepted(moment: datetime, precision: str) -> None:
    text = (
        moment.date().isoformat() if precision == "d" else moment.isoformat(timespec="minutes" if precision else "auto")
    )
    assert grammar.conforms("date", text)
    assert instant(text) is not None


DATE_TOKENS = st.sampled_from(
    ["2024", "0000", "-", "02", "29", "30", "13", "T", "10", ":", "00", "60", "Z", "+08", ".5", "1"]
)


@given(st.lists(DATE_TOKENS, min_size=1, max_size=12).map("".join))
def test_what_the_date_pattern_accepts_is_a_date(text: str) -> None:
    if grammar.conforms("date", text):
        assert instant(text) is not None
