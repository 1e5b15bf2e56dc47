"""The lexical grammar of policy documents, shared by ``parse_policy`` and the JSON schema.

Each pattern here appears verbatim in ``schemas/iam-policy.v1.schema.json`` (a test compares
them), and the parser applies it the way JSON Schema does (``re.search``), so the two accept the
same strings. Every string of a policy is first checked against :data:`CONTROL_CHARACTER`: with
control characters (``\\n`` among them) out, the ``$`` of a pattern can only mean the end.
Digits are spelled ``[0-9]``: ``\\d`` would also accept other scripts' digits in Python.
"""

from __future__ import annotations

import re

VERSIONS = ("1.0", "1.1")  # Huawei IAM: "1.0" system roles (with "Depends"), "1.1" fine-grained policies
EFFECTS = ("Allow", "Deny")
MAX_STRING = 1024

CONTROL_CHARACTER = r"[\u0000-\u001f\u007f]"
# service:resource-type:operation, e.g. swr:repo:createTrigger, swr::createLoginSecret, swr:*:get*, *:*:*
ACTION = r"^(?:\*|[A-Za-z0-9*?]+:[A-Za-z0-9*?]*:[A-Za-z0-9*?]+)$"
# "*" or service:region:account-id:type:path, no spaces; the path may hold ":" and "/"
RESOURCE = r"^(?:\*|[^: ]+:[^: ]*:[^: ]*:[^: ]+:[^ ]+)$"
# g:UserName, swr:TargetRegion, g:ResourceTag/env
CONDITION_KEY = r"^[A-Za-z0-9]+:[A-Za-z0-9][A-Za-z0-9_./-]*$"

# Condition operator families (JSON Schema patternProperties of the Condition object).
STRING_OPERATORS = r"^String(?:Not)?(?:Equals|EqualsIgnoreCase|Like)(?:IfExists)?$"
DATE_OPERATORS = r"^Date(?:Equals|NotEquals|LessThan|LessThanEquals|GreaterThan|GreaterThanEquals)(?:IfExists)?$"
IP_OPERATORS = r"^(?:Not)?IpAddress(?:IfExists)?$"
BOOL_OPERATORS = r"^Bool(?:IfExists)?$"
NULL_OPERATORS = r"^Null$"
BOOL_STRINGS = ("true", "false")

_HEX = "[0-9A-Fa-f]{1,4}"
_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9][0-9]|[1-9]?[0-9])"
_IPV4 = f"(?:{_OCTET}\\.){{3}}{_OCTET}"
_IPV6_FORMS = (
    f"(?:{_HEX}:){{7}}{_HEX}",
    f"(?:{_HEX}:){{1,7}}:",
    f"(?:{_HEX}:){{1,6}}:{_HEX}",
    f"(?:{_HEX}:){{1,5}}(?::{_HEX}){{1,2}}",
    f"(?:{_HEX}:){{1,4}}(?::{_HEX}){{1,3}}",
    f"(?:{_HEX}:){{1,3}}(?::{_HEX}){{1,4}}",
    f"(?:{_HEX}:){{1,2}}(?::{_HEX}){{1,5}}",
    f"{_HEX}:(?::{_HEX}){{1,6}}",
    f":(?:(?::{_HEX}){{1,7}}|:)",
    f"(?:{_HEX}:){{6}}{_IPV4}",
    f"::(?:[fF]{{4}}:)?{_IPV4}",
)
_IPV6 = f"(?:{'|'.join(_IPV6_FORMS)})"
# An IPv4 or IPv6 address or CIDR block (host bits may be set: 10.1.2.3/8 is 10.0.0.0/8).
IP_VALUE = f"^(?:{_IPV4}(?:/(?:3[0-2]|[12]?[0-9]))?|{_IPV6}(?:/(?:12[0-8]|1[01][0-9]|[1-9]?[0-9]))?)$"

_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:[02468][048]|[13579][26])00)"
_MONTH_DAY = (
    "(?:(?:0[13578]|1[02])-(?:0[1-9]|[12][0-9]|3[01])"
    "|(?:0[469]|11)-(?:0[1-9]|[12][0-9]|30)"
    "|02-(?:0[1-9]|1[0-9]|2[0-8]))"
)
_TIME = "T(?:[01][0-9]|2[0-3]):[0-5][0-9](?::[0-5][0-9](?:\\.[0-9]{1,6})?)?(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])?"
# ISO 8601 date or date-time (a calendar date that exists; no offset means UTC).
DATE_VALUE = f"^(?!0000)(?:[0-9]{{4}}-{_MONTH_DAY}|{_LEAP_YEAR}-02-29)(?:{_TIME})?$"

PATTERNS = {
    "control": CONTROL_CHARACTER,
    "action": ACTION,
    "resource": RESOURCE,
    "condition_key": CONDITION_KEY,
    "ip": IP_VALUE,
    "date": DATE_VALUE,
}
_COMPILED = {name: re.compile(pattern) for name, pattern in PATTERNS.items()}


def has_control_character(value: str) -> bool:
    """Whether ``value`` holds a C0 control character or DEL (never allowed in a policy)."""
    return _COMPILED["control"].search(value) is not None


def conforms(kind: str, value: str) -> bool:
    """Whether ``value`` matches the pattern ``kind`` of :data:`PATTERNS`, as JSON Schema tests it."""
    return _COMPILED[kind].search(value) is not None


class PolicyError(ValueError):
    """A policy document that does not follow the grammar.

    ``field`` is a JSON-path-like pointer to the offending element, such as
    ``Statement[2].Condition.StringLike`` or ``Statement[0].Action[1]`` (``<root>`` for the
    document itself); ``message`` says what is wrong with it.
    """

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def check_text(value: object, where: str) -> str:
    """``value`` as a string of at most :data:`MAX_STRING` characters and no control characters."""
    if not isinstance(value, str):
        raise PolicyError(where, f"expected a string, got {type(value).__name__}")
    if len(value) > MAX_STRING:
        raise PolicyError(where, f"longer than {MAX_STRING} characters")
    if has_control_character(value):
        raise PolicyError(where, "contains a control character")
    return value


def one_or_many(value: object, where: str) -> list[tuple[object, str]]:
    """A scalar or a non-empty list, as (item, field path) pairs: ``x`` or ``[x, ...]`` both work."""
    if isinstance(value, list):
        if not value:
            raise PolicyError(where, "must not be an empty list")
        return [(item, f"{where}[{index}]") for index, item in enumerate(value)]
    return [(value, where)]
