"""Which image tags fire a deployment trigger: the SWR ``trigger_type`` / ``condition`` pair.

Pure decision core, no I/O. ``parse_condition`` runs when a trigger is created or updated and
raises :class:`ConditionError` naming the request field; ``TagCondition.matches`` and
``accepts_update`` run for every push event and never raise.

- ``all``: condition ``.*`` (empty is normalised to ``.*``); every tag matches.
- ``tag``: ``;``-separated exact tags (``latest;stable``); blanks dropped, duplicates removed,
  each must be an OCI tag.
- ``regular``: an RE2 regular expression (linear time: no backreferences, no lookaround) that
  must match the whole tag; at most 1024 characters.
- ``semver`` (extension, like Keel): ``major`` | ``minor`` | ``patch`` (Keel update policies;
  any release matches, pre-releases never do) or a range.

A tag is a version when it is strict ``MAJOR.MINOR.PATCH[-pre][+build]`` with an optional
leading ``v``; ``1.2`` and ``20240101`` are not versions. Range grammar (subset of
node-semver)::

    range      := set ( "||" set )*                    any set may match
    set        := comparator ( [","] comparator )*       every comparator must hold
    comparator := [ op ] partial                        blanks allowed after op
    op         := ">=" | "<=" | ">" | "<" | "=" | "==" | "^" | "~"
    partial    := [ "v" ] n [ "." n [ "." n [ "-" pre ] [ "+" build ] ] ]    n := digits | x | X | *

A partial is an interval: ``1.2``/``1.2.x`` is ``>=1.2.0 <1.3.0``, ``1``/``1.x`` is
``>=1.0.0 <2.0.0``, ``*`` is everything; so ``>1.2`` is ``>=1.3.0`` and ``<=1.2`` is
``<1.3.0``. ``^1.2.3`` is ``>=1.2.3 <2.0.0`` (``^0.2.3`` → ``<0.3.0``, ``^0.0.3`` →
``<0.0.4``); ``~1.2.3`` is ``>=1.2.3 <1.3.0`` (``~1`` → ``<2.0.0``). No hyphen ranges, no
``!=``. A pre-release satisfies a set only if one of its comparators names a pre-release of
the same ``MAJOR.MINOR.PATCH`` (node-semver's rule): ``>=1.0.0`` never selects ``2.0.0-rc.1``.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import re2
from semver import Version

TRIGGER_TYPES = ("all", "tag", "regular", "semver")
SEMVER_LEVELS = ("major", "minor", "patch")
MAX_CONDITION_LENGTH = 1024

_OCI_TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
_NUMBER = r"([0-9]+|[xX*])"
_PARTIAL = re.compile(rf"v?{_NUMBER}(?:\.{_NUMBER}(?:\.{_NUMBER}(?:-[0-9A-Za-z.-]+)?(?:\+[0-9A-Za-z.-]+)?)?)?")
_OPERATORS = (">=", "<=", "==", ">", "<", "=", "^", "~")  # longest first: prefixes are tried in order
_COMPARE: dict[str, Callable[[Version, Version], bool]] = {
    ">=": lambda v, b: v >= b,
    ">": lambda v, b: v > b,
    "<": lambda v, b: v < b,
    "<=": lambda v, b: v <= b,
    "==": lambda v, b: v == b,
}


class ConditionError(ValueError):
    """An invalid trigger condition; ``field`` names the request body field at fault."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def parse_version(tag: str | None) -> Version | None:
    """The semantic version a tag spells (leading ``v`` allowed), or None."""
    if not tag:
        return None
    try:
        return Version.parse(tag[1:] if tag[0] in "vV" else tag)
    except (ValueError, TypeError):
        return None


@dataclass(frozen=True)
class TagCondition:
    """A validated, normalised condition; build it with :func:`parse_condition`."""

    trigger_type: str
    condition: str
    _matcher: Callable[[str], bool] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "_matcher", _build_matcher(self.trigger_type, self.condition))

    def matches(self, tag: str | None) -> bool:
        """Whether a push of ``tag`` fires the trigger; untagged events (None) never do."""
        return tag is not None and self._matcher(tag)

    def accepts_update(self, current_tag: str | None, new_tag: str) -> bool:
        """Whether ``new_tag`` may replace ``current_tag`` in a workload.

        ``major``: any newer release; ``minor``: newer with the same major; ``patch``: newer
        with the same major.minor (Keel's policies). A current tag that is missing or not a
        version accepts any release. Other types: ``matches(new_tag)``.
        """
        if not self.matches(new_tag):
            return False
        if self.condition not in SEMVER_LEVELS or self.trigger_type != "semver":
            return True
        current, new = parse_version(current_tag), parse_version(new_tag)
        if current is None or new is None:
            return True
        if self.condition == "minor" and new.major != current.major:
            return False
        if self.condition == "patch" and (new.major, new.minor) != (current.major, current.minor):
            return False
        return new > current


def parse_condition(trigger_type: str, condition: str) -> TagCondition:
    """Validate and normalise a trigger's condition; raises :class:`ConditionError`."""
    if trigger_type not in TRIGGER_TYPES:
        raise ConditionError("trigger_type", f"must be one of {', '.join(TRIGGER_TYPES)}, got {trigger_type!r}")
    if len(condition) > MAX_CONDITION_LENGTH:
        raise ConditionError("condition", f"longer than {MAX_CONDITION_LENGTH} characters")
    if trigger_type == "all":
        condition = ".*" if condition.strip() in ("", ".*") else condition
    elif trigger_type == "tag":
        condition = ";".join(dict.fromkeys(tag.strip() for tag in condition.split(";") if tag.strip()))
    elif trigger_type == "semver":
        condition = condition.strip()
        condition = condition.lower() if condition.lower() in SEMVER_LEVELS else condition
    return TagCondition(trigger_type, condition)


def _build_matcher(trigger_type: str, condition: str) -> Callable[[str], bool]:
    if trigger_type == "all":
        if condition != ".*":
            raise ConditionError("condition", "must be '.*' for trigger_type 'all'")
        return lambda tag: True
    if trigger_type == "tag":
        return _tag_matcher(condition)
    if trigger_type == "regular":
        regex = _compile_regex(condition)
        return lambda tag: regex.fullmatch(tag) is not None
    if trigger_type == "semver":
        return _semver_matcher(condition)
    raise ConditionError("trigger_type", f"must be one of {', '.join(TRIGGER_TYPES)}, got {trigger_type!r}")


def _tag_matcher(condition: str) -> Callable[[str], bool]:
    tags = frozenset(condition.split(";")) if condition else frozenset[str]()
    if not tags:
        raise ConditionError("condition", "expected at least one tag, e.g. 'latest;stable'")
    for tag in sorted(tags):
        if not _OCI_TAG.fullmatch(tag):
            raise ConditionError("condition", f"{tag!r} is not a valid image tag")
    return tags.__contains__


@functools.lru_cache(maxsize=1024)
def _compile_regex(pattern: str) -> Any:
    if not pattern:
        raise ConditionError("condition", "the regular expression is empty")
    if len(pattern) > MAX_CONDITION_LENGTH:
        raise ConditionError("condition", f"longer than {MAX_CONDITION_LENGTH} characters")
    options = re2.Options()
    options.log_errors = False  # the error is returned to the caller; RE2 would also print it
    try:
        return re2.compile(pattern, options)
    except re2.error as exc:
        detail = exc.args[0] if exc.args else exc
        text = detail.decode(errors="replace") if isinstance(detail, bytes) else str(detail)
        raise ConditionError("condition", f"invalid regular expression: {text}") from None


def _semver_matcher(condition: str) -> Callable[[str], bool]:
    if condition in SEMVER_LEVELS:
        return lambda tag: (version := parse_version(tag)) is not None and not version.prerelease
    try:
        sets = tuple(_parse_set(text) for text in condition.split("||"))
    except ValueError as exc:
        raise ConditionError("condition", f"invalid semver range: {exc}") from None

    def matches(tag: str) -> bool:
        version = parse_version(tag)
        return version is not None and any(_satisfies(version, bounds) for bounds in sets)

    return matches


Bound = tuple[str, Version]


def _satisfies(version: Version, bounds: tuple[Bound, ...]) -> bool:
    if not all(_COMPARE[op](version, bound) for op, bound in bounds):
        return False
    core = version.finalize_version()
    return not version.prerelease or any(bound.prerelease and bound.finalize_version() == core for _, bound in bounds)


def _parse_set(text: str) -> tuple[Bound, ...]:
    words = text.replace(",", " ").split()
    if not words:
        raise ValueError("empty range; use '*' to accept every release")
    bounds: list[Bound] = []
    while words:
        word = words.pop(0)
        if word in _OPERATORS:
            if not words:
                raise ValueError(f"{word!r} is not followed by a version")
            word += words.pop(0)
        op = next((candidate for candidate in _OPERATORS if word.startswith(candidate)), "")
        bounds.extend(_desugar(op, word[len(op) :]))
    return tuple(bounds)


def _desugar(op: str, partial: str) -> list[Bound]:
    """Rewrite one comparator on a possibly partial version into plain comparisons."""
    numbers, exact = _parse_partial(partial)
    padded = [*numbers, 0, 0, 0][:3]
    low = exact if exact is not None else Version(*padded)
    high = _bump(padded, len(numbers) - 1) if numbers else None
    if op == "^":
        level = next((i for i, n in enumerate(numbers) if n > 0), len(numbers) - 1)
        return [(">=", low), ("<", _bump(padded, level))] if numbers else []
    if op == "~":
        return [(">=", low), ("<", _bump(padded, min(len(numbers), 2) - 1))] if numbers else []
    if exact is not None:
        return [("==" if op in ("", "=", "==") else op, exact)]
    if op in ("", "=", "=="):
        return [(">=", low)] + ([("<", high)] if high else [])
    if op == ">=" or (op == "<=" and high is None):
        return [(">=", low)]
    if high is None:
        raise ValueError(f"'{op}{partial}' matches nothing")
    return [(">=", high)] if op == ">" else [("<", low if op == "<" else high)]


def _parse_partial(text: str) -> tuple[list[int], Version | None]:
    match = _PARTIAL.fullmatch(text)
    if match is None:
        raise ValueError(f"{text!r} is not a version such as 1.2.3, 1.2 or 1.x")
    parts = [part for part in match.groups() if part is not None]
    wildcard = next((i for i, part in enumerate(parts) if not part.isdigit()), len(parts))
    if any(part.isdigit() for part in parts[wildcard:]):
        raise ValueError(f"{text!r}: a wildcard may only be followed by wildcards")
    numbers = [int(part) for part in parts[:wildcard]]
    if len(numbers) < 3:
        if "-" in text or "+" in text:
            raise ValueError(f"{text!r}: a pre-release or build needs a full version")
        return numbers, None
    exact = parse_version(text)
    if exact is None:
        raise ValueError(f"{text!r} is not a semantic version")
    return numbers, exact


def _bump(numbers: list[int], level: int) -> Version:
    kept = [*numbers[:level], numbers[level] + 1]
    return Version(*[*kept, 0, 0][:3])
