"""Enterprise replication policies: filter validation and matching, destination names. Pure.

Filters are SWR's ``Filter {type, value}``: ``type`` ``name`` (the full repository name,
``team/app``) or ``tag``; ``value`` a doublestar glob. Extensions per filter: ``kind``
(``doublestar`` default, or ``regexp`` — RE2, whole value) and ``decoration`` (``matches``
default, or ``excludes``). Every filter must accept (AND); no filter accepts everything.
``resource`` filters (``image``) are accepted and ignored: only images are replicated.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from workers.triggers.selectors import RuleSelector, SelectorError

FILTER_TYPES = ("name", "tag", "resource")
TRIGGER_TYPES = ("manual", "scheduled", "event_based")


class PolicyError(ValueError):
    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field


@dataclass(frozen=True, slots=True)
class PolicyFilters:
    names: tuple[RuleSelector, ...]
    tags: tuple[RuleSelector, ...]

    def repository_matches(self, name: str) -> bool:
        return all(selector.accepts(name, "") for selector in self.names)

    def tag_matches(self, tag: str) -> bool:
        return all(selector.accepts("", tag) for selector in self.tags)


def parse_filters(raw: object) -> PolicyFilters:
    """Validate the ``filters`` list; raises ``PolicyError`` naming ``filters[i].value`` etc."""
    if raw is None:
        return PolicyFilters((), ())
    if not isinstance(raw, list):
        raise PolicyError("filters", "expected a list of {type, value}")
    names: list[RuleSelector] = []
    tags: list[RuleSelector] = []
    for index, item in enumerate(raw):
        field = f"filters[{index}]"
        if not isinstance(item, dict):
            raise PolicyError(field, "expected an object {type, value}")
        kind_of = item.get("type")
        if kind_of not in FILTER_TYPES:
            raise PolicyError(f"{field}.type", f"expected one of {', '.join(FILTER_TYPES)}")
        if kind_of == "resource":
            if item.get("value") not in (None, "", "image"):
                raise PolicyError(f"{field}.value", "only 'image' resources are replicated")
            continue
        selector = _selector(item, field, repository=kind_of == "name")
        (names if kind_of == "name" else tags).append(selector)
    return PolicyFilters(tuple(names), tuple(tags))


def _selector(item: dict[str, Any], field: str, *, repository: bool) -> RuleSelector:
    value = item.get("value")
    if not isinstance(value, str):
        raise PolicyError(f"{field}.value", "expected a string pattern")
    kind = item.get("kind") or "doublestar"
    decoration = item.get("decoration") or "matches"
    if decoration not in ("matches", "excludes"):
        raise PolicyError(f"{field}.decoration", "expected matches or excludes")
    if repository:
        decoration = "repoMatches" if decoration == "matches" else "repoExcludes"
    try:
        return RuleSelector(kind=kind, decoration=decoration, pattern=value)
    except SelectorError as exc:
        raise PolicyError(f"{field}.{'kind' if exc.field.endswith('kind') else 'value'}", str(exc)) from None


def destination_repository(name: str, dest_namespace: str) -> str:
    """``team/app/api`` under ``dr`` → ``dr/app/api`` (the namespace is replaced); empty keeps it."""
    if not dest_namespace:
        return name
    _, _, rest = name.partition("/")
    return f"{dest_namespace}/{rest}" if rest else f"{dest_namespace}/{name}"


def select_tags(filters: PolicyFilters, repositories: Sequence[tuple[str, Sequence[str]]]) -> list[tuple[str, str]]:
    """(repository, tag) pairs the policy copies, from each repository's tags, in a stable order."""
    chosen: list[tuple[str, str]] = []
    for name, tags in sorted(repositories):
        if filters.repository_matches(name):
            chosen.extend((name, tag) for tag in sorted(tags) if filters.tag_matches(tag))
    return chosen


def five_field_cron(cron: str) -> str:
    """Harbor's crons carry a leading seconds field; accept both forms (seconds are dropped)."""
    parts = cron.split()
    return " ".join(parts[1:]) if len(parts) == 6 else cron
