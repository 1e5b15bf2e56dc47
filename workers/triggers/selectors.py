"""Which repositories and tags a webhook policy covers: SWR enterprise / Harbor ``scope_rules``.

Pure decision core, no I/O. ``parse_scope_rules`` runs when a policy is created or updated and
raises :class:`SelectorError` naming the offending field path; ``rules_match`` runs for every
event and never raises.

No rules cover everything; several rules are OR-ed; within a rule every selector must accept
(AND). Repository selectors (``repoMatches``/``repoExcludes``) see the repository name inside
the namespace (``team/api`` for ``ns/team/api``); tag selectors (``matches``/``excludes``) see
the tag. An empty pattern matches everything, as in Harbor.

Kinds: ``regexp`` is an RE2 expression that must match the whole value. ``doublestar`` follows
bmatcuk/doublestar as used by Harbor: ``*`` and ``?`` never cross ``/``; a ``**`` path segment
matches zero or more segments (``a/**/b`` matches ``a/b``; a trailing ``a/**`` needs at least
one more segment); ``[a-z]``, ``[^a]``/``[!a]`` classes (never matching ``/``); ``{a,b}``
alternatives within one segment (may nest); ``\\`` escapes. Globs are translated to RE2, not
matched with wcmatch, whose backtracking regexes take exponential time on ``**/a/**/.../b``.

Untagged events (tag None) mirror Harbor's retention ``untagged`` extra: the flag is
``untagged`` from the selector's extras JSON, default false. ``matches`` accepts an untagged
event iff the flag is true, ``excludes`` iff it is false; so by default ``matches`` filters
skip untagged pushes, ``excludes`` filters let them through, and ``matches``/``excludes`` with
the same pattern and extras are always complements. (Harbor defaults the flag to true for
``matches`` with empty extras, to keep untagged artifacts in retention; a webhook should not
fire on a tagless push unless asked to.)
"""

from __future__ import annotations

import functools
import json
import re
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import re2

KINDS = ("doublestar", "regexp")
TAG_DECORATIONS = ("matches", "excludes")
REPO_DECORATIONS = ("repoMatches", "repoExcludes")
REPO_SCOPE_MODES = ("", "regular", "selection")
MAX_PATTERN_LENGTH = 512  # SWR's documented limit for selector patterns
_SELECTOR_KEYS = ("kind", "decoration", "pattern", "extras")
_RULE_KEYS = ("tag_selectors", "scope_selectors", "repo_scope_mode")
# Like doublestar, split segments on every "/" not preceded by a backslash, before anything else.
_SEGMENT_SEPARATOR = re.compile(r"(?<!\\)/")
_GLOB_TOKEN = re.compile(r"\\.|\\$|\*+|\[(?:\\.|[^\]\\])*\]?|.", re.DOTALL)
_CLASS_MEMBER = re.compile(r"\\.|.", re.DOTALL)


class SelectorError(ValueError):
    """An invalid scope rule; ``field`` is a path such as ``scope_rules[0].tag_selectors[1].pattern``."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message

    def under(self, prefix: str) -> SelectorError:
        return SelectorError(f"{prefix}.{self.field}", self.message)


@dataclass(frozen=True)
class RuleSelector:
    """One selector; validated on construction (raises :class:`SelectorError`)."""

    kind: str
    decoration: str
    pattern: str
    extras: str = ""
    _match: Callable[[str], bool] = field(init=False, repr=False, compare=False)
    _untagged: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise SelectorError("kind", f"must be one of {', '.join(KINDS)}, got {self.kind!r}")
        if self.decoration not in TAG_DECORATIONS + REPO_DECORATIONS:
            expected = ", ".join(TAG_DECORATIONS + REPO_DECORATIONS)
            raise SelectorError("decoration", f"must be one of {expected}, got {self.decoration!r}")
        object.__setattr__(self, "_match", _matcher(self.kind, self.pattern))
        object.__setattr__(self, "_untagged", _untagged_flag(self.extras))

    def accepts(self, repository: str, tag: str | None) -> bool:
        """Whether this selector lets an event for ``repository``:``tag`` through."""
        if self.decoration in REPO_DECORATIONS:
            return self._match(repository) != (self.decoration == "repoExcludes")
        if tag is None:
            return self._untagged == (self.decoration == "matches")
        return self._match(tag) != (self.decoration == "excludes")


@dataclass(frozen=True)
class ScopeRule:
    """Selectors that must all accept; validated on construction (raises :class:`SelectorError`)."""

    tag_selectors: tuple[RuleSelector, ...]
    repo_selectors: tuple[RuleSelector, ...]
    repo_scope_mode: str = ""

    def __post_init__(self) -> None:
        for index, selector in enumerate(self.tag_selectors):
            if selector.decoration not in TAG_DECORATIONS:
                raise SelectorError(f"tag_selectors[{index}].decoration", "must be matches or excludes")
        for index, selector in enumerate(self.repo_selectors):
            if selector.decoration not in REPO_DECORATIONS:
                raise SelectorError(
                    f"scope_selectors.repository[{index}].decoration", "must be repoMatches or repoExcludes"
                )
        if self.repo_scope_mode not in REPO_SCOPE_MODES:
            raise SelectorError("repo_scope_mode", "must be regular, selection or empty")

    def matches(self, repository: str, tag: str | None) -> bool:
        """Whether every selector of this rule accepts the event."""
        selectors = self.repo_selectors + self.tag_selectors
        return all(selector.accepts(repository, tag) for selector in selectors)


def rules_match(rules: Sequence[ScopeRule], repository: str, tag: str | None) -> bool:
    """Whether a policy with ``rules`` covers an event; ``repository`` excludes the namespace."""
    return not rules or any(rule.matches(repository, tag) for rule in rules)


def parse_scope_rules(raw: object, *, field: str = "scope_rules") -> tuple[ScopeRule, ...]:
    """Decode and validate the wire ``scope_rules`` list; None or [] means no rules.

    Raises :class:`SelectorError` whose ``field`` is the path of the first bad value.
    """
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SelectorError(field, "expected a list of scope rules")
    return tuple(_parse_rule(item, f"{field}[{index}]") for index, item in enumerate(raw))


def scope_rules_to_json(rules: Sequence[ScopeRule]) -> list[dict[str, Any]]:
    """The wire form of ``rules``; ``parse_scope_rules`` turns it back into equal rules."""
    return [
        {
            "tag_selectors": [_selector_to_json(selector) for selector in rule.tag_selectors],
            "scope_selectors": {"repository": [_selector_to_json(selector) for selector in rule.repo_selectors]},
            "repo_scope_mode": rule.repo_scope_mode,
        }
        for rule in rules
    ]


def _selector_to_json(selector: RuleSelector) -> dict[str, str]:
    return {key: getattr(selector, key) for key in _SELECTOR_KEYS}


def _parse_rule(raw: object, path: str) -> ScopeRule:
    body = _expect_object(raw, path, _RULE_KEYS)
    raw_scopes = body.get("scope_selectors")
    scopes = _expect_object({} if raw_scopes is None else raw_scopes, f"{path}.scope_selectors", ("repository",))
    tag_selectors = _parse_selectors(body.get("tag_selectors"), f"{path}.tag_selectors")
    repo_selectors = _parse_selectors(scopes.get("repository"), f"{path}.scope_selectors.repository")
    mode = body.get("repo_scope_mode") or ""
    if not isinstance(mode, str):
        raise SelectorError(f"{path}.repo_scope_mode", "expected a string")
    try:
        return ScopeRule(tag_selectors, repo_selectors, mode)
    except SelectorError as exc:
        raise exc.under(path) from None


def _parse_selectors(raw: object, path: str) -> tuple[RuleSelector, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise SelectorError(path, "expected a list of selectors")
    return tuple(_parse_selector(item, f"{path}[{index}]") for index, item in enumerate(raw))


def _parse_selector(raw: object, path: str) -> RuleSelector:
    body = _expect_object(raw, path, _SELECTOR_KEYS)
    values: dict[str, str] = {}
    for key in _SELECTOR_KEYS:
        value = body.get(key)
        if value is None and key == "extras":
            value = ""
        if value is None:
            raise SelectorError(f"{path}.{key}", "is required")
        if not isinstance(value, str):
            raise SelectorError(f"{path}.{key}", "expected a string")
        values[key] = value
    try:
        return RuleSelector(**values)
    except SelectorError as exc:
        raise exc.under(path) from None


def _expect_object(raw: object, path: str, allowed: tuple[str, ...]) -> dict[str, object]:
    if not isinstance(raw, dict):
        raise SelectorError(path, "expected an object")
    for key in raw:
        if key not in allowed:
            raise SelectorError(f"{path}.{key}", f"unknown field; expected one of {', '.join(allowed)}")
    return raw


def _untagged_flag(extras: str) -> bool:
    if not extras.strip():
        return False
    try:
        decoded = json.loads(extras)
    except ValueError:
        raise SelectorError("extras", 'expected a JSON object such as {"untagged": true}') from None
    if not isinstance(decoded, dict):
        raise SelectorError("extras", 'expected a JSON object such as {"untagged": true}')
    untagged = decoded.get("untagged", False)
    if not isinstance(untagged, bool):
        raise SelectorError("extras", '"untagged" must be true or false')
    return untagged


@functools.lru_cache(maxsize=1024)
def _matcher(kind: str, pattern: str) -> Callable[[str], bool]:
    if not pattern:
        return lambda value: True
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise SelectorError("pattern", f"longer than {MAX_PATTERN_LENGTH} characters")
    if kind == "doublestar":
        try:
            source = f"(?s:{glob_to_regex(pattern)})"
        except ValueError as exc:
            raise SelectorError("pattern", f"invalid doublestar pattern: {exc}") from None
    else:
        source = pattern
    try:
        regex = _compile(source)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        raise SelectorError("pattern", f"invalid {kind} pattern: {text}") from None
    return lambda value: regex.fullmatch(value) is not None


def _compile(source: str) -> Any:
    options = re2.Options()
    options.log_errors = False  # errors go back to the caller; RE2 would also print them
    return re2.compile(source, options)


def glob_to_regex(pattern: str) -> str:
    """Translate a doublestar glob into an RE2 expression for a full match; raises ValueError."""
    segments = _SEGMENT_SEPARATOR.split(pattern)
    parts: list[str] = []
    for index, segment in enumerate(segments):
        last = index == len(segments) - 1
        if segment == "**":
            parts.append(".*" if last else "(?:[^/]*/)*")
        else:
            parts.append(_alternatives(deque(_GLOB_TOKEN.findall(segment)), depth=0) + ("" if last else "/"))
    return "".join(parts)


def _alternatives(tokens: deque[str], depth: int) -> str:
    """Translate tokens up to the ``}`` closing this brace level (or the end, at depth 0)."""
    options: list[str] = []
    current: list[str] = []
    while tokens:
        token = tokens.popleft()
        if token == "}" and depth:
            return "(?:" + "|".join([*options, "".join(current)]) + ")"
        if token == "," and depth:
            options.append("".join(current))
            current = []
        else:
            current.append(_alternatives(tokens, depth + 1) if token == "{" else _token_regex(token))
    if depth:
        raise ValueError("unclosed '{'")
    return "".join(current)


def _token_regex(token: str) -> str:
    if token == "\\":
        raise ValueError("ends with an unescaped backslash")
    if token.startswith("\\"):
        return str(re2.escape(token[1]))
    if token.startswith("*"):
        return "[^/]*"  # "**" inside a segment is just "*", as in doublestar
    if token == "?":
        return "[^/]"
    if token.startswith("["):
        if len(token) < 2 or not token.endswith("]"):
            raise ValueError("unclosed '['")
        return _class_regex(token[1:-1])
    return str(re2.escape(token))


def _class_regex(body: str) -> str:
    negate = body[:1] in ("^", "!")
    members = _CLASS_MEMBER.findall(body[1:] if negate else body)
    if not members:
        raise ValueError("empty character class")
    hexed = "".join("-" if member == "-" else f"\\x{{{ord(member[-1]):x}}}" for member in members)
    regex = f"[^/{hexed}]" if negate else f"[{hexed}]"
    try:
        crosses_separator = _compile(regex).fullmatch("/") is not None
    except re2.error:
        raise ValueError(f"invalid character class [{body}]") from None
    if crosses_separator:
        raise ValueError(f"character class [{body}] would match '/'")
    return regex
