"""Condition operators of policy statements, evaluated against a request's context keys.

Pure, no I/O. ``parse_condition`` runs when a policy is parsed and raises ``PolicyError``
naming the field; ``Clause.holds`` runs for every candidate statement and never raises.

Semantics follow AWS IAM, which Huawei IAM copies:

* several values of one key are OR-ed; several keys of one operator, and several operators of
  one ``Condition``, are AND-ed;
* a key absent from the request context makes a positive operator false and a negated one
  (``StringNotEquals``, ``StringNotEqualsIgnoreCase``, ``StringNotLike``, ``NotIpAddress``,
  ``DateNotEquals``) true; the ``...IfExists`` form of any operator is true when the key is absent;
* a negated operator with several values is true when the context value matches none of them;
* ``Null: {"k": "true"}`` holds when ``k`` is absent, ``"false"`` when it is present;
* a context value of the wrong type (``g:SourceIp`` that is not an address, a
  ``g:CurrentTime`` that is not ISO 8601) is present but matches no value;
* condition keys are case-insensitive; string comparisons are case-sensitive except for the
  ``...IgnoreCase`` operators; ``Bool`` compares ``true``/``false`` case-insensitively;
* dates are ISO 8601 (no offset means UTC); an IPv4-mapped IPv6 address (``::ffff:10.0.0.1``)
  is in a block if its IPv6 or its IPv4 form is, and a mapped block in a policy
  (``::ffff:10.0.0.0/104``) is the IPv4 block (``10.0.0.0/8``).

Not supported: ``ForAnyValue:``/``ForAllValues:`` (context values are single strings), numeric
operators and policy variables (``${g:UserName}``).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from workers.iam import grammar
from workers.iam.grammar import PolicyError, check_text, one_or_many
from workers.iam.urn import glob_matcher

IF_EXISTS = "IfExists"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)
_IpNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Test = Callable[[str], bool]


@dataclass(frozen=True)
class Operator:
    """One operator: its value kind, whether it is negated, and how it compiles its values."""

    name: str
    kind: str  # "string", "date", "ip", "bool" or "null": how values are validated
    negated: bool
    compile: Callable[[tuple[str, ...]], Test]  # values -> does a present context value match?


@dataclass(frozen=True)
class Clause:
    """One key of one operator, compiled: ``holds`` is the whole evaluation."""

    operator: str  # as written, e.g. "StringLikeIfExists"
    key: str  # as written, e.g. "g:UserName"
    values: tuple[str, ...]
    absent: bool = field(compare=False)  # the result when the key is not in the context
    test: Test = field(compare=False, repr=False)  # the result for a present value
    lookup: str = field(compare=False, repr=False)  # the key, lower-cased

    def holds(self, context: Mapping[str, str]) -> bool:
        """Whether the clause is satisfied by ``context`` (keys already lower-cased)."""
        value = context.get(self.lookup)
        return self.absent if value is None else self.test(value)


def _equals(values: tuple[str, ...]) -> Test:
    return frozenset(values).__contains__


def _equals_ignore_case(values: tuple[str, ...]) -> Test:
    folded = frozenset(v.casefold() for v in values)
    return lambda value: value.casefold() in folded


def _like(values: tuple[str, ...]) -> Test:
    matchers = tuple(map(glob_matcher, values))
    return lambda value: any(match(value) for match in matchers)


def _bool(values: tuple[str, ...]) -> Test:
    wanted = frozenset(values)
    return lambda value: value.lower() in wanted


def _negate(compile_values: Callable[[tuple[str, ...]], Test]) -> Callable[[tuple[str, ...]], Test]:
    def compiled(values: tuple[str, ...]) -> Test:
        test = compile_values(values)
        return lambda value: not test(value)

    return compiled


@functools.lru_cache(maxsize=4096)
def instant(text: str) -> int | None:
    """Microseconds since the epoch of an ISO 8601 date or date-time (UTC if naive), else None."""
    try:
        moment = datetime.fromisoformat(text)
    except ValueError:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return (moment - _EPOCH) // _MICROSECOND


def _date(compare: Callable[[int, tuple[int, ...]], bool]) -> Callable[[tuple[str, ...]], Test]:
    def compiled(values: tuple[str, ...]) -> Test:
        bounds = tuple(v for v in map(instant, values) if v is not None)

        def test(value: str) -> bool:
            moment = instant(value)
            return moment is not None and compare(moment, bounds)

        return test

    return compiled


@functools.lru_cache(maxsize=4096)
def addresses(text: str) -> tuple[tuple[int, int], ...]:
    """(IP version, address as an integer) of ``text``; an IPv4-mapped IPv6 address gives both forms."""
    try:
        parsed = ipaddress.ip_address(text)
    except ValueError:
        return ()
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return ((6, int(parsed)), (4, int(parsed.ipv4_mapped)))
    return ((parsed.version, int(parsed)),)


def _ip(values: tuple[str, ...]) -> Test:
    # Integers and masks, not ipaddress objects: "in" on those costs a microsecond per block.
    blocks = tuple((n.version, int(n.network_address), int(n.netmask)) for n in map(_network, values))

    def test(value: str) -> bool:
        for version, number in addresses(value):
            for block_version, network, mask in blocks:
                if version == block_version and number & mask == network:
                    return True
        return False

    return test


def _network(text: str) -> _IpNetwork:
    network = ipaddress.ip_network(text, strict=False)
    if isinstance(network, ipaddress.IPv6Network) and network.network_address.ipv4_mapped is not None:
        mapped = network.network_address.ipv4_mapped
        return ipaddress.ip_network(f"{mapped}/{max(network.prefixlen - 96, 0)}", strict=False)
    return network


def _null(values: tuple[str, ...]) -> Test:
    present_matches = "false" in values
    return lambda value: present_matches


_BASE_OPERATORS = (
    Operator("StringEquals", "string", False, _equals),
    Operator("StringNotEquals", "string", True, _negate(_equals)),
    Operator("StringEqualsIgnoreCase", "string", False, _equals_ignore_case),
    Operator("StringNotEqualsIgnoreCase", "string", True, _negate(_equals_ignore_case)),
    Operator("StringLike", "string", False, _like),
    Operator("StringNotLike", "string", True, _negate(_like)),
    Operator("DateEquals", "date", False, _date(lambda m, b: m in b)),
    Operator("DateNotEquals", "date", True, _date(lambda m, b: m not in b)),
    Operator("DateLessThan", "date", False, _date(lambda m, b: m < max(b))),
    Operator("DateLessThanEquals", "date", False, _date(lambda m, b: m <= max(b))),
    Operator("DateGreaterThan", "date", False, _date(lambda m, b: m > min(b))),
    Operator("DateGreaterThanEquals", "date", False, _date(lambda m, b: m >= min(b))),
    Operator("IpAddress", "ip", False, _ip),
    Operator("NotIpAddress", "ip", True, _negate(_ip)),
    Operator("Bool", "bool", False, _bool),
    Operator("Null", "null", False, _null),
)
OPERATORS: Mapping[str, Operator] = {op.name: op for op in _BASE_OPERATORS}
OPERATOR_NAMES = frozenset(
    [op.name for op in _BASE_OPERATORS] + [op.name + IF_EXISTS for op in _BASE_OPERATORS if op.kind != "null"]
)


def parse_condition(document: object, where: str) -> tuple[Clause, ...]:
    """The clauses of a statement's ``Condition`` object; raises ``PolicyError`` naming the field."""
    if not isinstance(document, dict):
        raise PolicyError(where, "expected an object of condition operators")
    clauses: list[Clause] = []
    for name, block in document.items():
        clauses.extend(_parse_operator(name, block, f"{where}.{name}"))
    return tuple(clauses)


def _parse_operator(name: object, block: object, where: str) -> list[Clause]:
    if not isinstance(name, str) or name not in OPERATOR_NAMES:
        raise PolicyError(where, f"unknown condition operator (known: {', '.join(sorted(OPERATOR_NAMES))})")
    if_exists = name.endswith(IF_EXISTS)
    operator = OPERATORS[name.removesuffix(IF_EXISTS) if if_exists else name]
    if not isinstance(block, dict) or not block:
        raise PolicyError(where, "expected a non-empty object of condition keys")
    clauses = []
    for key, raw in block.items():
        key_where = f"{where}.{key}"
        if not isinstance(key, str) or not grammar.conforms("condition_key", check_text(key, key_where)):
            raise PolicyError(key_where, "a condition key looks like g:SourceIp or swr:TargetRegion")
        values = tuple(_value(operator.kind, item, item_where) for item, item_where in one_or_many(raw, key_where))
        absent = _null_absent(values) if operator.kind == "null" else if_exists or operator.negated
        test = operator.compile(values)
        clauses.append(Clause(name, key, values, absent=absent, test=test, lookup=key.lower()))
    return clauses


def _null_absent(values: tuple[str, ...]) -> bool:
    return "true" in values


def _value(kind: str, value: object, where: str) -> str:
    if kind in ("bool", "null"):
        if isinstance(value, bool):
            return "true" if value else "false"
        if value not in grammar.BOOL_STRINGS:
            raise PolicyError(where, 'expected true, false, "true" or "false"')
        return str(value)
    text = check_text(value, where)
    if kind == "ip" and not (grammar.conforms("ip", text) and _is_network(text)):
        raise PolicyError(where, f"{text!r} is not an IPv4 or IPv6 address or CIDR block")
    if kind == "date" and (not grammar.conforms("date", text) or instant(text) is None):
        raise PolicyError(where, f"{text!r} is not an ISO 8601 date or date-time")
    return text


def _is_network(text: str) -> bool:
    try:
        _network(text)
    except ValueError:
        return False
    return True


def condition_holds(clauses: tuple[Clause, ...], context: Mapping[str, str]) -> bool:
    """Every clause holds (an empty condition always does); ``context`` keys are lower-cased."""
    for clause in clauses:
        value = context.get(clause.lookup)
        if not (clause.absent if value is None else clause.test(value)):
            return False
    return True
