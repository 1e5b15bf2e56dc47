"""Policy documents and the allow/deny decision: the pure core of IAM.

``parse_policy`` runs when a policy is created or loaded and raises ``PolicyError`` naming the
field; it accepts exactly what ``schemas/iam-policy.v1.schema.json`` accepts. ``evaluate`` and
``evaluate_with_dependencies`` run on every request, never block and never raise.

A document is Huawei IAM's::

    {"Version": "1.1",
     "Statement": [{"Effect": "Allow" | "Deny",
                    "Action": "swr:repo:*" | [...],
                    "Resource": "swr:*:*:repo:team/*" | [...],      optional: absent = "*"
                    "Condition": {"StringEquals": {"g:UserName": ["alice"]}},  optional
                    "Sid": "name for audit"}],                        optional (ours)
     "Depends": [{"catalog": "BASE", "display_name": "Tenant Guest"}]}  optional, roles ("1.0")

Evaluation (as Huawei and AWS IAM): a statement applies when one of its actions matches the
request's action (case-insensitive wildcards), one of its resources matches the resource
(case-sensitive wildcards) and its condition holds. Any applicable Deny denies; otherwise any
applicable Allow allows; otherwise the request is denied by default. Neither the order of
statements nor that of policies matters; the statement reported is the first applicable one by
(policy name, statement index), so audit lines are stable too.

Parse a policy once per version of it and keep the ``Policy``: parsing costs tens of
microseconds per statement, and a kept ``Policy`` memoises which of its statements concern
each action and namespace (``workers.iam.model``), which is what makes ``evaluate`` cheap.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import TYPE_CHECKING

from workers.iam import grammar
from workers.iam.conditions import condition_holds, parse_condition
from workers.iam.grammar import PolicyError, check_text, one_or_many
from workers.iam.model import Effect, Policy, Statement, resource_key
from workers.iam.urn import ANY

if TYPE_CHECKING:
    from workers.iam.grants import Grant

__all__ = [
    "AccessRequest",
    "Decision",
    "Effect",
    "Outcome",
    "Policy",
    "PolicyError",
    "Statement",
    "StatementRef",
    "evaluate",
    "evaluate_with_dependencies",
    "first_refusal",
    "parse_policy",
]

_EMPTY: Mapping[str, str] = MappingProxyType({})


class Outcome(StrEnum):
    ALLOW = "allow"
    EXPLICIT_DENY = "explicit-deny"  # a Deny statement applies: nothing can override it
    IMPLICIT_DENY = "implicit-deny"  # nothing allows: the default


@dataclass(frozen=True)
class AccessRequest:
    """One action on one resource, with the request's condition keys (``g:SourceIp``, ...).

    Context keys are case-insensitive (stored lower-cased); values are strings: ISO 8601 for
    ``g:CurrentTime``, ``"true"``/``"false"`` for booleans.
    """

    action: str
    resource: str = ANY
    context: Mapping[str, str] = field(default_factory=lambda: _EMPTY, hash=False)

    def __post_init__(self) -> None:
        if self.context is not _EMPTY:
            lowered = {key.lower(): value for key, value in self.context.items()}
            object.__setattr__(self, "context", MappingProxyType(lowered))


@dataclass(frozen=True)
class StatementRef:
    """Which statement decided: for audit lines and 403 messages."""

    policy: str
    index: int
    effect: Effect
    sid: str | None = None

    def describe(self) -> str:
        sid = f" ({self.sid})" if self.sid else ""
        return f"statement {self.index}{sid} of policy {self.policy!r}"


@dataclass(frozen=True)
class Decision:
    """The answer for one request: allowed or not, why, and for which (action, resource)."""

    outcome: Outcome
    request: AccessRequest  # for a refused dependency, the dependent action's request
    statement: StatementRef | None = None
    grant: Grant | None = None

    @property
    def allowed(self) -> bool:
        return self.outcome is Outcome.ALLOW

    def explain(self) -> str:
        """One line for a 403 body or an audit log."""
        what = f"{self.request.action} on {self.request.resource}"
        if self.outcome is Outcome.EXPLICIT_DENY and self.statement is not None:
            return f"{what} is denied by {self.statement.describe()}"
        if self.outcome is Outcome.IMPLICIT_DENY:
            return f"{what} is not allowed by any policy or grant"
        basis = self.statement.describe() if self.statement else f"grant {self.grant}"
        return f"{what} is allowed by {basis}"


def evaluate(request: AccessRequest, policies: Sequence[Policy]) -> Decision:
    """Decide ``request`` under ``policies``: explicit Deny, else Allow, else implicit deny."""
    action, resource, context = request.action.lower(), request.resource, request.context
    target = resource_key(resource)
    allow: tuple[str, int, Statement] | None = None
    deny: tuple[str, int, Statement] | None = None
    for policy in policies:
        for statement in policy.candidates(action, target):
            if not statement.matches_resource(resource):
                continue
            if statement.condition and not condition_holds(statement.condition, context):
                continue
            found = (policy.name, statement.index, statement)
            if statement.effect is Effect.DENY:
                deny = found if deny is None or found[:2] < deny[:2] else deny
                break  # the policy's later statements have higher indexes, and a Deny decides
            if allow is None or found[:2] < allow[:2]:
                allow = found
    if deny is not None:
        return Decision(Outcome.EXPLICIT_DENY, request, _ref(deny))
    if allow is not None:
        return Decision(Outcome.ALLOW, request, _ref(allow))
    return Decision(Outcome.IMPLICIT_DENY, request)


def _ref(found: tuple[str, int, Statement]) -> StatementRef:
    name, index, statement = found
    return StatementRef(name, index, statement.effect, statement.sid)


def evaluate_with_dependencies(
    request: AccessRequest, dependencies: Sequence[AccessRequest], policies: Sequence[Policy]
) -> Decision:
    """Allowed only if ``request`` and every dependent request are; else the first refusal."""
    return first_refusal((request, *dependencies), lambda one: evaluate(one, policies))


def first_refusal(requests: Sequence[AccessRequest], decide: Callable[[AccessRequest], Decision]) -> Decision:
    """The first decision that is not an allow, or the first request's allow if all are allowed."""
    decisions = []
    for request in requests:
        decision = decide(request)
        if not decision.allowed:
            return decision
        decisions.append(decision)
    if not decisions:
        raise ValueError("first_refusal needs at least one request")
    return decisions[0]


# --- parsing -------------------------------------------------------------------------------

_TOP_KEYS = {"Version": True, "Statement": True, "Depends": False}  # key -> required
_STATEMENT_KEYS = {"Effect": True, "Action": True, "Resource": False, "Condition": False, "Sid": False}
_DEPENDS_KEYS = {"catalog": True, "display_name": True}


def parse_policy(document: object, *, name: str = "") -> Policy:
    """Parse and validate a policy document (a decoded JSON value); raises ``PolicyError``."""
    top = _object(document, "<root>", _TOP_KEYS, prefix="")
    version = check_text(top["Version"], "Version")
    if version not in grammar.VERSIONS:
        raise PolicyError("Version", f"expected one of {', '.join(grammar.VERSIONS)}")
    raw_statements = top["Statement"]
    if not isinstance(raw_statements, list) or not raw_statements:
        raise PolicyError("Statement", "expected a non-empty list of statements")
    statements = tuple(_statement(raw, index) for index, raw in enumerate(raw_statements))
    return Policy(version, statements, name, _depends(top.get("Depends", [])))


def _object(value: object, where: str, keys: Mapping[str, bool], prefix: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise PolicyError(where, "expected an object")
    for key in value:
        if key not in keys:
            raise PolicyError(f"{prefix}{key}", f"unknown field (allowed: {', '.join(keys)})")
    for key, required in keys.items():
        if required and key not in value:
            raise PolicyError(f"{prefix}{key}", "is required")
    return value


def _statement(raw: object, index: int) -> Statement:
    where = f"Statement[{index}]"
    fields = _object(raw, where, _STATEMENT_KEYS, prefix=f"{where}.")
    effect = fields["Effect"]
    if effect not in grammar.EFFECTS:
        raise PolicyError(f"{where}.Effect", 'expected "Allow" or "Deny"')
    actions = _patterns(fields["Action"], f"{where}.Action", "action", "an action such as swr:repo:createTrigger")
    resources: tuple[str, ...] = (ANY,)
    if "Resource" in fields:
        hint = 'a URN such as swr:*:*:repo:team/* or "*"'
        resources = _patterns(fields["Resource"], f"{where}.Resource", "resource", hint)
    condition = parse_condition(fields["Condition"], f"{where}.Condition") if "Condition" in fields else ()
    sid = check_text(fields["Sid"], f"{where}.Sid") if "Sid" in fields else None
    return Statement(index, Effect(str(effect)), actions, resources, condition, sid)


def _patterns(value: object, where: str, kind: str, hint: str) -> tuple[str, ...]:
    patterns = []
    for item, item_where in one_or_many(value, where):
        text = check_text(item, item_where)
        if not grammar.conforms(kind, text):
            raise PolicyError(item_where, f"{text!r} is not {hint}")
        patterns.append(text)
    return tuple(patterns)


def _depends(value: object) -> tuple[tuple[str, str], ...]:
    if not isinstance(value, list):
        raise PolicyError("Depends", "expected a list of {catalog, display_name} objects")
    found = []
    for index, raw in enumerate(value):
        where = f"Depends[{index}]"
        entry = _object(raw, where, _DEPENDS_KEYS, prefix=f"{where}.")
        catalog = check_text(entry["catalog"], f"{where}.catalog")
        found.append((catalog, check_text(entry["display_name"], f"{where}.display_name")))
    return tuple(found)
