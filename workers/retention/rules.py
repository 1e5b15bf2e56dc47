"""Retention rules as SWR sends them, parsed into typed objects for :func:`workers.retention.plan.plan_retention`.

Pure decision core, no I/O. The parsers run when a policy is created or updated and raise
:class:`RuleError` whose ``field`` is the path of the first bad value (``rules[0].params.days``);
``basic_rules_to_json`` and ``enterprise_rules_to_json`` are their inverses. Every rule RETAINS
tags; a policy deletes what no rule retains (see :mod:`workers.retention.plan`).

**Basic edition** (``/v2/manage/namespaces/{ns}/repos/{repo}/retentions``): ``algorithm`` must be
``"or"``; 1 to 15 rules ``{"template", "params", "tag_selectors"}``:

- ``date_rule`` ``{"days": D}``, 1 ≤ D ≤ 36500: retain tags pushed within the last D days.
- ``tag_rule`` ``{"num": N}``, 1 ≤ N ≤ 32766: retain the N most recently pushed tags.
- ``tag_selectors`` ``[{"kind", "pattern"}]`` name exceptions, always retained and not counted
  against N: ``label`` is one exact tag; ``regexp`` is an RE2 expression searched anywhere in the
  tag (unanchored, like Go's ``MatchString``; SWR's own example anchors it: ``^123$``).

Numbers may be JSON integers or strings of decimal digits, because SWR's documented examples and
clients send ``{"days": "30"}``; booleans, floats and other strings are rejected. ``to_json``
writes integers.

**Enterprise edition** (``/v2/{project}/instances/{instance}/namespaces/{ns}/retention/policies``,
Harbor's retention rules): up to 15 rules ``{"priority", "disabled", "action", "template",
"params", "tag_selectors", "scope_selectors", "repo_scope_mode"}`` (``id`` from a GET is accepted
and dropped). ``action`` must be ``"retain"``; ``params`` uses Harbor's names, the template's own:

- ``latestPushedK`` ``{"latestPushedK": K}`` / ``latestPulledN`` ``{"latestPulledN": N}``,
  0 ≤ K, N ≤ 32766 (Harbor rejects ≥ MaxInt16);
- ``nDaysSinceLastPush`` / ``nDaysSinceLastPull`` ``{"nDaysSinceLastPush": D}``, 0 ≤ D ≤ 36500;
- ``always``: no params (``{}`` or absent).

Selectors are :class:`workers.triggers.selectors.RuleSelector` (doublestar or RE2 ``regexp``,
full match; ``matches``/``excludes`` on tags, ``repoMatches``/``repoExcludes`` on the repository
name inside the namespace). Untagged artifacts follow Harbor's retention default: a ``matches``
selector with blank ``extras`` selects them, so the parser writes that default out as
``{"untagged": true}``; ``{"untagged": false}`` leaves untagged artifacts out of the rule.
Disabled rules are kept (for ``to_json``) and skipped by the planner; rule indexes everywhere
are positions in the submitted list, disabled rules included.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import re2

from workers.triggers.selectors import (
    MAX_PATTERN_LENGTH,
    RuleSelector,
    ScopeRule,
    SelectorError,
    parse_scope_rules,
    scope_rules_to_json,
)

BASIC_TEMPLATES = {"date_rule": "days", "tag_rule": "num"}  # template -> its only parameter
ENTERPRISE_TEMPLATES = ("latestPushedK", "latestPulledN", "nDaysSinceLastPush", "nDaysSinceLastPull", "always")
EXCEPTION_KINDS = ("label", "regexp")
MAX_RULES = 15  # Harbor's limit per policy
MAX_DAYS = 36500  # a century; keeps ``now - days`` inside datetime's range
MAX_COUNT = 32766  # Harbor: "is too large" from MaxInt16
HARBOR_UNTAGGED_DEFAULT = '{"untagged": true}'
_DAY_PARAMS = ("date_rule", "nDaysSinceLastPush", "nDaysSinceLastPull")
_DIGITS = re.compile(r"[0-9]{1,9}")
_OCI_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_BASIC_KEYS = ("template", "params", "tag_selectors")
_SCOPE_KEYS = ("tag_selectors", "scope_selectors", "repo_scope_mode")
_ENTERPRISE_KEYS = ("id", "priority", "disabled", "action", "template", "params", *_SCOPE_KEYS)


class RuleError(ValueError):
    """An invalid retention rule; ``field`` is a path such as ``rules[0].params.days``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def under(self, prefix: str) -> RuleError:
        return RuleError(f"{prefix}.{self.field}", self.message)


@dataclass(frozen=True)
class TagException:
    """A basic-edition ``tag_selectors`` entry: tags it matches are always retained."""

    kind: str
    pattern: str
    _matches: Callable[[str], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in EXCEPTION_KINDS:
            raise RuleError("kind", f"must be one of {', '.join(EXCEPTION_KINDS)}, got {self.kind!r}")
        object.__setattr__(self, "_matches", _exception_matcher(self.kind, self.pattern))

    def matches(self, tag: str) -> bool:
        return self._matches(tag)


@dataclass(frozen=True)
class BasicRule:
    """``date_rule`` (``value`` days) or ``tag_rule`` (``value`` tags) with its exceptions."""

    template: str
    value: int
    exceptions: tuple[TagException, ...] = ()

    def exception_for(self, tag: str) -> TagException | None:
        return next((exception for exception in self.exceptions if exception.matches(tag)), None)


@dataclass(frozen=True)
class EnterpriseRule:
    """One Harbor-style rule; ``value`` is None for ``always``. ``scope`` holds its selectors."""

    template: str
    value: int | None
    scope: ScopeRule = field(default_factory=lambda: ScopeRule((), ()))
    priority: int = 0
    disabled: bool = False
    action: str = "retain"


@dataclass(frozen=True)
class BasicRules:
    rules: tuple[BasicRule, ...]
    algorithm: str = "or"


@dataclass(frozen=True)
class EnterpriseRules:
    rules: tuple[EnterpriseRule, ...]
    algorithm: str = "or"


RuleSet = BasicRules | EnterpriseRules


def parse_basic_rules(algorithm: object, rules: object) -> BasicRules:
    """Validate a basic ``retentions`` body's ``algorithm`` and ``rules``; raises :class:`RuleError`."""
    if algorithm != "or":
        raise RuleError("algorithm", f'must be "or", got {algorithm!r}')
    items = _expect_rule_list(rules, minimum=1)
    return BasicRules(tuple(_parse_basic_rule(item, f"rules[{index}]") for index, item in enumerate(items)))


def parse_enterprise_rules(rules: object) -> EnterpriseRules:
    """Validate an enterprise policy's ``rules`` (None or [] retains nothing and deletes nothing)."""
    items = _expect_rule_list([] if rules is None else rules, minimum=0)
    return EnterpriseRules(tuple(_parse_enterprise_rule(item, index) for index, item in enumerate(items)))


def basic_rules_to_json(rules: BasicRules) -> dict[str, Any]:
    """``{"algorithm", "rules"}``; ``parse_basic_rules(**basic_rules_to_json(r)) == r``."""
    return {
        "algorithm": rules.algorithm,
        "rules": [
            {
                "template": rule.template,
                "params": {BASIC_TEMPLATES[rule.template]: rule.value},
                "tag_selectors": [{"kind": item.kind, "pattern": item.pattern} for item in rule.exceptions],
            }
            for rule in rules.rules
        ],
    }


def enterprise_rules_to_json(rules: EnterpriseRules) -> list[dict[str, Any]]:
    """The wire ``rules``; ``parse_enterprise_rules(enterprise_rules_to_json(r)) == r``."""
    scopes = scope_rules_to_json([rule.scope for rule in rules.rules])
    return [
        {
            "priority": rule.priority,
            "disabled": rule.disabled,
            "action": rule.action,
            "template": rule.template,
            "params": {} if rule.value is None else {rule.template: rule.value},
            **scope,
        }
        for rule, scope in zip(rules.rules, scopes, strict=True)
    ]


def _expect_rule_list(raw: object, *, minimum: int) -> list[object]:
    if not isinstance(raw, list):
        raise RuleError("rules", "expected a list of rules")
    if len(raw) < minimum:
        raise RuleError("rules", "at least one rule is required: with none, every tag would be deleted")
    if len(raw) > MAX_RULES:
        raise RuleError("rules", f"at most {MAX_RULES} rules")
    return raw


def _parse_basic_rule(raw: object, path: str) -> BasicRule:
    body = _expect_object(raw, path, _BASIC_KEYS)
    template = body.get("template")
    if template not in BASIC_TEMPLATES:
        raise RuleError(f"{path}.template", f"must be one of {', '.join(BASIC_TEMPLATES)}, got {template!r}")
    value = _parse_param(body.get("params"), f"{path}.params", str(template), minimum=1)
    selectors = body.get("tag_selectors")
    if selectors is None:
        selectors = []
    if not isinstance(selectors, list):
        raise RuleError(f"{path}.tag_selectors", "expected a list of selectors")
    exceptions = tuple(_parse_exception(item, f"{path}.tag_selectors[{index}]") for index, item in enumerate(selectors))
    return BasicRule(str(template), value, exceptions)


def _parse_exception(raw: object, path: str) -> TagException:
    body = _expect_object(raw, path, ("kind", "pattern"))
    for key in ("kind", "pattern"):
        if not isinstance(body.get(key), str):
            raise RuleError(f"{path}.{key}", "is required" if body.get(key) is None else "expected a string")
    try:
        return TagException(str(body["kind"]), str(body["pattern"]))
    except RuleError as exc:
        raise exc.under(path) from None


def _parse_enterprise_rule(raw: object, index: int) -> EnterpriseRule:
    path = f"rules[{index}]"
    body = _expect_object(raw, path, _ENTERPRISE_KEYS)
    template = body.get("template")
    if template not in ENTERPRISE_TEMPLATES:
        raise RuleError(f"{path}.template", f"must be one of {', '.join(ENTERPRISE_TEMPLATES)}, got {template!r}")
    action = body.get("action", "retain")
    if action != "retain":
        raise RuleError(f"{path}.action", f'must be "retain", got {action!r}')
    priority = body.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise RuleError(f"{path}.priority", "expected an integer")
    disabled = body.get("disabled", False)
    if not isinstance(disabled, bool):
        raise RuleError(f"{path}.disabled", "expected true or false")
    value = None
    if template != "always":
        value = _parse_param(body.get("params"), f"{path}.params", str(template), minimum=0)
    elif body.get("params"):
        raise RuleError(f"{path}.params", "always takes no parameters")
    return EnterpriseRule(str(template), value, _parse_scope(body, index), priority, disabled, "retain")


def _parse_scope(body: Mapping[str, object], index: int) -> ScopeRule:
    subset = {key: body[key] for key in _SCOPE_KEYS if key in body}
    try:
        (scope,) = parse_scope_rules([subset], field="rules")
    except SelectorError as exc:  # the path says rules[0]: this rule alone was parsed
        raise RuleError(f"rules[{index}]{exc.field.removeprefix('rules[0]')}", exc.message) from None
    selectors = tuple(
        RuleSelector(item.kind, item.decoration, item.pattern, HARBOR_UNTAGGED_DEFAULT)
        if item.decoration == "matches" and not item.extras.strip()
        else item
        for item in scope.tag_selectors
    )
    return ScopeRule(selectors, scope.repo_selectors, scope.repo_scope_mode)


def _parse_param(raw: object, path: str, template: str, *, minimum: int) -> int:
    name = BASIC_TEMPLATES.get(template, template)
    if raw is None:
        raise RuleError(path, f'is required: {{"{name}": ...}}')
    body = _expect_object(raw, path, (name,))
    maximum = MAX_DAYS if template in _DAY_PARAMS else MAX_COUNT
    value = body.get(name)
    if isinstance(value, str) and _DIGITS.fullmatch(value):
        value = int(value)
    if value is None:
        raise RuleError(f"{path}.{name}", "is required")
    if not isinstance(value, int) or isinstance(value, bool):
        raise RuleError(f"{path}.{name}", "expected an integer (or a string of digits)")
    if not minimum <= value <= maximum:
        raise RuleError(f"{path}.{name}", f"must be between {minimum} and {maximum}, got {value}")
    return value


def _expect_object(raw: object, path: str, allowed: tuple[str, ...]) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise RuleError(path, "expected an object")
    for key in raw:
        if key not in allowed:
            raise RuleError(f"{path}.{key}", f"unknown field; expected one of {', '.join(allowed)}")
    return raw


def _exception_matcher(kind: str, pattern: str) -> Callable[[str], bool]:
    if kind == "label":
        if not _OCI_TAG.fullmatch(pattern):
            raise RuleError("pattern", f"{pattern!r} is not a valid image tag")
        return pattern.__eq__
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise RuleError("pattern", f"longer than {MAX_PATTERN_LENGTH} characters")
    options = re2.Options()
    options.log_errors = False  # the error goes back to the caller; RE2 would also print it
    try:
        regex = re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        raise RuleError("pattern", f"invalid regexp: {text}") from None
    return lambda tag: regex.search(tag) is not None
