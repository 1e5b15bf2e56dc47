"""Immutable tag rules as SWR sends them (``CreateImmutableRuleBody``), parsed for the planner.

Pure decision core, no I/O. :func:`parse_immutable_rule` runs when a rule is created or updated
and raises :class:`workers.retention.rules.RuleError` naming the first bad field
(``tag_selectors[0].pattern``); :func:`immutable_protections` turns stored rules into the
``ScopeRule``s of :class:`workers.retention.plan.Protections`. A rule is Harbor's:
``action`` ``"immutable"``, ``template`` ``"immutable_template"``, one or more tag selectors
(``matches``/``excludes``, doublestar or RE2 ``regexp``) and optional repository selectors under
``scope_selectors.repository``; no repository selector means every repository of the
namespace. Untagged digests never match (they have no tag to protect). Disabled rules are kept
and protect nothing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from workers.retention.rules import RuleError
from workers.triggers.selectors import ScopeRule, SelectorError, parse_scope_rules, scope_rules_to_json

ACTION = "immutable"
TEMPLATE = "immutable_template"
_KEYS = ("id", "namespace_id", "namespace_name", "priority", "disabled", "action", "template",
         "tag_selectors", "scope_selectors")  # fmt: skip


@dataclass(frozen=True)
class ImmutableRuleSpec:
    """A validated rule; ``scope`` holds its selectors."""

    scope: ScopeRule
    priority: int = 0
    disabled: bool = False

    def to_json(self) -> dict[str, Any]:
        """The wire fields stored and answered: ``parse_immutable_rule(spec.to_json()) == spec``."""
        (scope,) = scope_rules_to_json([self.scope])
        return {
            "priority": self.priority,
            "disabled": self.disabled,
            "action": ACTION,
            "template": TEMPLATE,
            "tag_selectors": scope["tag_selectors"],
            "scope_selectors": scope["scope_selectors"],
        }


def parse_immutable_rule(body: Mapping[str, object]) -> ImmutableRuleSpec:
    """Validate a create or update body (``id``/``namespace_*`` from a GET are accepted and dropped)."""
    for key in body:
        if key not in _KEYS:
            raise RuleError(key, f"unknown field; expected one of {', '.join(_KEYS[3:])}")
    action = body.get("action") or ACTION
    if action != ACTION:
        raise RuleError("action", f'must be "{ACTION}", got {action!r}')
    template = body.get("template") or TEMPLATE
    if template != TEMPLATE:
        raise RuleError("template", f'must be "{TEMPLATE}", got {template!r}')
    priority = body.get("priority", 0)
    if not isinstance(priority, int) or isinstance(priority, bool):
        raise RuleError("priority", "expected an integer")
    disabled = body.get("disabled", False)
    if not isinstance(disabled, bool):
        raise RuleError("disabled", "expected true or false")
    if not body.get("tag_selectors"):
        raise RuleError("tag_selectors", "at least one tag selector is required (which tags are immutable?)")
    subset = {key: body[key] for key in ("tag_selectors", "scope_selectors") if key in body}
    try:
        (scope,) = parse_scope_rules([subset], field="rule")
    except SelectorError as exc:  # one rule was parsed: drop the "rule[0]." of the path
        raise RuleError(exc.field.removeprefix("rule[0]."), exc.message) from None
    return ImmutableRuleSpec(scope, priority, disabled)


def immutable_protections(stored: Iterable[Mapping[str, Any]]) -> tuple[ScopeRule, ...]:
    """The enabled rules among ``stored`` wire documents (validated when saved), for ``Protections``."""
    return tuple(spec.scope for spec in map(parse_immutable_rule, stored) if not spec.disabled)
