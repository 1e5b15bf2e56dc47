"""Parsed policies, and the index that finds the statements a request may be about.

Pure, no I/O. ``Policy.candidates`` is on the hot path of every decision: it returns the
statements whose actions match the request's action and whose resources *can* match its
resource, so that ``evaluate`` runs full wildcard matches and conditions on few statements.

The index has two levels, both built lazily and memoised per policy. Per action: the
statements whose action patterns match it. Within that, per (resource type, first path
segment) of the request's URN — ``("repo", "team")`` for ``swr:r:a:repo:team/api``: the
statements with a pattern that names that type and segment literally (``swr:*:*:repo:team/*``),
plus those whose patterns could match any type or segment (``*``, ``swr:*:*:repo:*``). This
is sound because a URN has exactly four colons: a pattern with four literal colons can only
match it part by part, so its literal type and first segment must be the URN's. A resource
with any other number of colons is checked against every statement of the action.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from enum import StrEnum

from workers.iam.conditions import Clause
from workers.iam.urn import ANY, Matcher, glob_matcher, normalise_resource_pattern

_ACTION_LIMIT = 1024  # actions come from the route table: never reached in practice
_TARGET_LIMIT = 4096  # distinct (type, namespace) keys per action; the memo starts over when full
_LITERAL_SEGMENT = re.compile(r"([^*?/]+)(?:/.*)?", re.DOTALL)
ResourceKey = tuple[str, str]  # (resource type, first path segment)


class Effect(StrEnum):
    ALLOW = "Allow"
    DENY = "Deny"


@dataclass(frozen=True)
class Statement:
    """One parsed statement; its pattern matchers are built (and cached) with it."""

    index: int
    effect: Effect
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    condition: tuple[Clause, ...] = ()
    sid: str | None = None
    action_matchers: tuple[Matcher, ...] = field(init=False, compare=False, repr=False)  # of lower-cased actions
    resource_matchers: tuple[Matcher, ...] = field(init=False, compare=False, repr=False)
    any_resource: bool = field(init=False, compare=False, repr=False)  # one pattern is "*"
    # (type, segment) or (type, "") keys of its patterns; None if a pattern may match anything
    resource_keys: tuple[ResourceKey, ...] | None = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        patterns = tuple(normalise_resource_pattern(r) for r in self.resources)
        object.__setattr__(self, "action_matchers", tuple(glob_matcher(a.lower()) for a in self.actions))
        object.__setattr__(self, "resource_matchers", tuple(map(glob_matcher, patterns)))
        object.__setattr__(self, "any_resource", ANY in patterns)
        keys = [_pattern_key(p) for p in patterns]
        object.__setattr__(self, "resource_keys", None if None in keys else tuple(k for k in keys if k))

    def matches_action(self, action: str) -> bool:
        """Whether one of the action patterns matches ``action`` (already lower-cased)."""
        return any(match(action) for match in self.action_matchers)

    def matches_resource(self, resource: str) -> bool:
        """Whether one of the resource patterns matches ``resource`` (case-sensitive)."""
        return self.any_resource or any(match(resource) for match in self.resource_matchers)


def _pattern_key(pattern: str) -> ResourceKey | None:
    """The (type, first segment) a pattern is confined to; segment "" if only the type is literal."""
    parts = pattern.split(":")
    if len(parts) != 5 or "*" in parts[3] or "?" in parts[3]:
        return None
    literal = _LITERAL_SEGMENT.fullmatch(parts[4])
    return (parts[3], literal.group(1) if literal else "")


def resource_key(resource: str) -> ResourceKey | None:
    """The (type, first segment) of a URN with exactly four colons, else None."""
    parts = resource.split(":")
    if len(parts) != 5:
        return None
    return (parts[3], parts[4].split("/", 1)[0])


@dataclass
class _ActionIndex:
    """The statements of one action, and per resource key the ones that may apply."""

    statements: tuple[Statement, ...]
    by_key: dict[ResourceKey, tuple[Statement, ...]] = field(default_factory=dict)

    def lookup(self, key: ResourceKey | None) -> tuple[Statement, ...]:
        if key is None:
            return self.statements
        found = self.by_key.get(key)
        if found is None:
            found = tuple(s for s in self.statements if _may_apply(s, key))
            if len(self.by_key) >= _TARGET_LIMIT:
                self.by_key.clear()
            self.by_key[key] = found
        return found


def _may_apply(statement: Statement, key: ResourceKey) -> bool:
    if statement.resource_keys is None:
        return True
    return any(k[0] == key[0] and k[1] in ("", key[1]) for k in statement.resource_keys)


@dataclass(frozen=True)
class Policy:
    """A parsed policy document. ``name`` identifies it in decisions (audit, 403 messages)."""

    version: str
    statements: tuple[Statement, ...]
    name: str = ""
    depends: tuple[tuple[str, str], ...] = ()  # (catalog, display_name) of a role's dependencies
    _by_action: dict[str, _ActionIndex] = field(default_factory=dict, init=False, compare=False, repr=False)

    def statements_for(self, action: str) -> tuple[Statement, ...]:
        """The statements whose action patterns match ``action`` (lower-cased)."""
        return self._index(action).statements

    def candidates(self, action: str, key: ResourceKey | None) -> tuple[Statement, ...]:
        """The statements for ``action`` (lower-cased) that may match a resource with ``key``."""
        return self._index(action).lookup(key)

    def _index(self, action: str) -> _ActionIndex:
        index = self._by_action.get(action)
        if index is None:
            index = _ActionIndex(tuple(s for s in self.statements if s.matches_action(action)))
            if len(self._by_action) < _ACTION_LIMIT:
                self._by_action[action] = index
        return index
