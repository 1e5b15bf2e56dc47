"""Which digests a retention run deletes: :func:`plan_retention`, a pure function of its inputs.

Called by the retention worker with an inventory snapshot of one namespace; no I/O, never
blocks, raises only ``ValueError`` (a naive ``now``). The worker deletes ``plan.deletions``
(empty when the plan is aborted) and records every decision with its reasons.

Semantics, per repository (Harbor's, applied to tags rather than artifacts):

1. **Which rules apply.** Basic edition: every rule. Enterprise: enabled rules whose repository
   selectors accept the repository; a repository no enabled rule covers is left alone (Harbor
   launches no job for it), so all its digests are kept.
2. **Each rule retains rows** among those its tag selectors select (basic: every tagged row;
   untagged rows are outside basic rules and always kept). ``latestPushedK``/``tag_rule``: the
   first K in push order; ``latestPulledN``: the first N in pull order (never-pulled rows rank
   after every pulled one, as Harbor's pull time 0 does, so they fill spare places);
   ``nDaysSinceLastPush``/``date_rule``: ``pushed_at >= now - D days``; ``nDaysSinceLastPull``:
   ``pulled_at >= now - D days`` (never pulled: not retained); ``always``: all selected rows.
   Basic exceptions (``tag_selectors``) are retained by their rule and take no place among N.
3. **Or.** A row is retained if any rule retains it; every other row is a deletion candidate.
4. **Digests.** Deleting a digest removes every tag on it, so a digest (of one repository) is
   deleted only if every one of its rows is a candidate and it is not protected: explicitly, by
   a deployment (in use, or moved off within the rollback window) or by an immutable rule
   matching one of its tags. Protections are checked only for digests the rules would delete.
5. **Blast radius.** If the deletions exceed ``max_deletions`` in all, or ``max_percent`` of the
   digests of any one repository, the plan is aborted: it deletes nothing and lists what it
   would have deleted (:attr:`Plan.would_delete`).

Order: push order is ``pushed_at`` newest first, then tag name (untagged first), then digest;
pull order is ``pulled_at`` newest first, then push order. Decisions are sorted by repository
and digest, reasons by tag, so the plan does not depend on the order of the snapshot.

Reasons: one per row, ``"<tag>: <clause>; <clause>"`` with the clauses of the rules that
retained it, or of every applicable rule and ``"no rule retains it"`` (``", but its digest is
kept"`` when a sibling or a protection keeps the digest); protection reasons come first. Past
the K-th retained row, a count rule says ``"beyond the latest K by push time"`` without running
its selectors on the row. Times must be timezone-aware.
"""

from __future__ import annotations

import functools
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Literal

from workers.retention.rules import BasicRule, BasicRules, RuleSet
from workers.triggers.selectors import RuleSelector, ScopeRule

_KINDS = {
    "tag_rule": "pushed_count",
    "latestPushedK": "pushed_count",
    "latestPulledN": "pulled_count",
    "date_rule": "pushed_days",
    "nDaysSinceLastPush": "pushed_days",
    "nDaysSinceLastPull": "pulled_days",
    "always": "always",
}
_NEVER = float("-inf")  # the pull time of a never-pulled row: after every real one


@dataclass(frozen=True, slots=True)
class TagRow:
    """One tag (``tag=None``: an untagged digest) of a repository inside the namespace."""

    repository: str
    tag: str | None
    digest: str
    pushed_at: datetime
    pulled_at: datetime | None = None


@dataclass(frozen=True)
class Protections:
    """Digests no rule outcome may delete.

    ``immutable``: immutable tag rules (``ScopeRule``: repository and tag selectors, untagged
    rows never match by default); a digest carrying a matching tag is kept. ``in_use`` and
    ``protected`` are digests, protected in every repository of the snapshot. ``replaced_at``:
    digest → when a deployment last moved off it; kept while ``now - replaced_at <= rollback_window``.
    """

    immutable: tuple[ScopeRule, ...] = ()
    in_use: frozenset[str] = frozenset()
    protected: frozenset[str] = frozenset()
    replaced_at: Mapping[str, datetime] = field(default_factory=dict)
    rollback_window: timedelta = timedelta(0)


@dataclass(frozen=True)
class Limits:
    """Blast-radius caps; None means no cap. Exceeding one (strictly) aborts the whole plan."""

    max_deletions: int | None = None
    max_percent: float | None = None

    def __post_init__(self) -> None:
        if self.max_deletions is not None and self.max_deletions < 0:
            raise ValueError("max_deletions must be >= 0")
        if self.max_percent is not None and not 0 <= self.max_percent <= 100:
            raise ValueError("max_percent must be between 0 and 100")


@dataclass(frozen=True, slots=True)
class DigestDecision:
    """The verdict on one digest; ``rules`` are the indexes of rules that retained a row of it."""

    repository: str
    digest: str
    tags: tuple[str, ...]
    untagged: bool
    action: Literal["keep", "delete"]
    reasons: tuple[str, ...]
    rules: tuple[int, ...] = ()
    retained_tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class Plan:
    """All decisions, sorted by (repository, digest). Apply only :attr:`deletions`."""

    decisions: tuple[DigestDecision, ...]
    abort_reason: str | None = None
    tag_count: int = 0

    @property
    def aborted(self) -> bool:
        return self.abort_reason is not None

    @property
    def would_delete(self) -> tuple[DigestDecision, ...]:
        """What the rules chose to delete, aborted or not."""
        return tuple(decision for decision in self.decisions if decision.action == "delete")

    @property
    def deletions(self) -> tuple[DigestDecision, ...]:
        """What to delete: :attr:`would_delete`, or nothing when aborted."""
        return () if self.aborted else self.would_delete

    @property
    def kept(self) -> tuple[DigestDecision, ...]:
        return tuple(decision for decision in self.decisions if decision.action == "keep")

    @property
    def counts(self) -> dict[str, int]:
        deleting = len(self.would_delete)
        return {
            "tags": self.tag_count,
            "digests": len(self.decisions),
            "kept": len(self.decisions) - deleting,
            "would_delete": deleting,
            "deleted": 0 if self.aborted else deleting,
        }


def plan_retention(
    snapshot: Sequence[TagRow], rules: RuleSet, protections: Protections, now: datetime, limits: Limits
) -> Plan:
    """Decide, per digest, keep or delete; see the module docstring for the exact semantics."""
    if now.tzinfo is None:
        raise ValueError("now must be timezone-aware")
    by_repository: dict[str, list[TagRow]] = defaultdict(list)
    for row in snapshot:
        by_repository[row.repository].append(row)
    checks = _prepare(rules)
    immutable = [(rule.repo_selectors, _TagMatcher(rule.tag_selectors)) for rule in protections.immutable]
    decisions: list[DigestDecision] = []
    for repository in sorted(by_repository):
        rows = sorted(by_repository[repository], key=_push_key)
        covering = [check for check in checks if _accepts_repository(check.repo_selectors, repository)]
        guarding = [(n, tags) for n, (repos, tags) in enumerate(immutable) if _accepts_repository(repos, repository)]
        guard = _Guard(protections, now, guarding)
        decisions.extend(_plan_repository(repository, rows, covering, isinstance(rules, BasicRules), guard, now))
    return Plan(tuple(decisions), _abort_reason(decisions, limits), len(snapshot))


def _push_key(row: TagRow) -> tuple[float, str, str, float]:
    pulled = _NEVER if row.pulled_at is None else row.pulled_at.timestamp()
    return (-row.pushed_at.timestamp(), row.tag or "", row.digest, -pulled)


def _pull_key(row: TagRow) -> float:
    return -_NEVER if row.pulled_at is None else -row.pulled_at.timestamp()


class _Ledger:
    """Per row (by position in push order): why it is retained, why not, and by which rules.

    Clauses are joined into strings and rules kept as bit masks: at 100k rows, lists per row
    cost a third of the plan time in allocation and garbage collection.
    """

    def __init__(self, size: int) -> None:
        self.kept: list[str] = [""] * size
        self.missed: list[str] = [""] * size
        self.rules: list[int] = [0] * size

    def keep(self, position: int, rule: int | None, clause: str) -> None:
        kept = self.kept[position]
        self.kept[position] = f"{kept}; {clause}" if kept else clause
        if rule is not None:
            self.rules[position] |= 1 << rule

    def miss(self, position: int, clause: str) -> None:
        missed = self.missed[position]
        self.missed[position] = f"{missed}; {clause}" if missed else clause


class _TagMatcher:
    """Whether every selector accepts a tag, remembered per tag for the whole plan.

    Tag selectors do not look at the repository, tags such as ``latest`` recur in every
    repository, and each RE2 call through the Python wrapper costs microseconds.
    """

    def __init__(self, selectors: tuple[RuleSelector, ...]) -> None:
        self.selectors = selectors
        self.seen: dict[str | None, bool] = {}

    def __call__(self, tag: str | None) -> bool:
        seen = self.seen
        if tag not in seen:
            seen[tag] = all(selector.accepts("", tag) for selector in self.selectors)
        return seen[tag]


class _ExceptionMatcher:
    """The clause of a basic rule's first exception that names a tag, remembered per tag."""

    def __init__(self, rule: BasicRule, index: int) -> None:
        self.rule, self.index = rule, index
        self.seen: dict[str | None, str | None] = {}

    def __call__(self, tag: str | None) -> str | None:
        seen = self.seen
        if tag not in seen:
            found = None if tag is None else self.rule.exception_for(tag)
            seen[tag] = None if found is None else f"exception {found.kind} {found.pattern!r} (rule {self.index})"
        return seen[tag]


@dataclass(frozen=True)
class _Check:
    """One enabled rule, prepared once per plan: what it selects and its basic exceptions."""

    index: int
    kind: str
    value: int
    selects: Callable[[str | None], bool]
    exception: Callable[[str | None], str | None] | None = None
    repo_selectors: tuple[RuleSelector, ...] = ()


def _prepare(rules: RuleSet) -> list[_Check]:
    if isinstance(rules, BasicRules):
        return [
            _Check(
                index,
                _KINDS[rule.template],
                rule.value,
                _is_tagged,
                _ExceptionMatcher(rule, index) if rule.exceptions else None,
            )
            for index, rule in enumerate(rules.rules)
        ]
    return [
        _Check(
            index,
            _KINDS[rule.template],
            rule.value or 0,
            _TagMatcher(rule.scope.tag_selectors),
            None,
            rule.scope.repo_selectors,
        )
        for index, rule in enumerate(rules.rules)
        if not rule.disabled
    ]


def _is_tagged(tag: str | None) -> bool:
    return tag is not None


def _plan_repository(
    repository: str, rows: list[TagRow], checks: list[_Check], basic: bool, guard: _Guard, now: datetime
) -> list[DigestDecision]:
    ledger = _Ledger(len(rows))
    if not checks:
        for position in range(len(rows)):
            ledger.keep(position, None, f"no enabled rule covers repository {repository!r}")
    pull_order: list[int] = []
    for check in checks:
        if check.kind == "pulled_count" and not pull_order:
            pull_order = sorted(range(len(rows)), key=lambda position: _pull_key(rows[position]))  # stable
        _apply(check, rows, pull_order, now, ledger)
    if basic:
        for position, row in enumerate(rows):
            if row.tag is None:
                ledger.keep(position, None, "untagged; basic rules only manage tags")
    by_digest: dict[str, list[int]] = defaultdict(list)
    for position, row in enumerate(rows):
        by_digest[row.digest].append(position)
    return [_decide(repository, digest, rows, by_digest[digest], ledger, guard) for digest in sorted(by_digest)]


def _accepts_repository(selectors: tuple[RuleSelector, ...], repository: str) -> bool:
    return all(selector.accepts(repository, None) for selector in selectors)


def _apply(check: _Check, rows: list[TagRow], pull_order: list[int], now: datetime, ledger: _Ledger) -> None:
    if check.kind == "pushed_count":
        _keep_first(check, rows, range(len(rows)), "pushed", ledger)
    elif check.kind == "pulled_count":
        _keep_first(check, rows, pull_order, "pulled", ledger)
    elif check.kind == "always":
        not_selected = f"not selected by rule {check.index}"
        for position, row in enumerate(rows):
            if check.selects(row.tag):
                ledger.keep(position, check.index, f"always retained (rule {check.index})")
            else:
                ledger.miss(position, not_selected)
    else:
        _keep_recent(check, rows, now, ledger)


def _keep_first(check: _Check, rows: list[TagRow], order: Iterable[int], verb: str, ledger: _Ledger) -> None:
    """Retain the first ``value`` selected rows of ``order``; selectors stop running once they are found."""
    index, count, exception = check.index, check.value, check.exception
    beyond = f"beyond the latest {count} by {verb.removesuffix('ed')} time (rule {index})"
    not_selected = f"not selected by rule {index}"
    found = 0
    for position in order:
        tag = rows[position].tag
        if found >= count and exception is None:
            ledger.miss(position, beyond)
        elif not check.selects(tag):
            ledger.miss(position, not_selected)
        elif exception is not None and (clause := exception(tag)) is not None:
            ledger.keep(position, index, clause)  # exceptions take no place among the ``count``
        elif found >= count:
            ledger.miss(position, beyond)
        else:
            found += 1
            never = " (never pulled)" if verb == "pulled" and rows[position].pulled_at is None else ""
            clause = f"{_ordinal(found)} most recently {verb}{never}, within the latest {count} (rule {index})"
            ledger.keep(position, index, clause)


def _keep_recent(check: _Check, rows: list[TagRow], now: datetime, ledger: _Ledger) -> None:
    """Retain selected rows pushed (pulled) at or after ``now - value days``."""
    index, days, exception = check.index, check.value, check.exception
    verb = check.kind.removesuffix("_days")
    cutoff, not_selected = now - timedelta(days=days), f"not selected by rule {index}"
    for position, row in enumerate(rows):
        when = row.pushed_at if verb == "pushed" else row.pulled_at
        if when is not None and when >= cutoff:
            if check.selects(row.tag):
                ledger.keep(position, index, f"{verb} {_ago(now, when)}, within {days} days (rule {index})")
            else:
                ledger.miss(position, not_selected)
        elif exception is not None and (clause := exception(row.tag)) is not None:
            ledger.keep(position, index, clause)
        elif when is None:
            ledger.miss(position, f"never pulled (rule {index})")
        else:
            ledger.miss(position, f"{verb} {_ago(now, when)}, older than {days} days (rule {index})")


class _Guard:
    """Protections as they apply in one repository (``immutable``: the rules covering it, by
    number); consulted only for digests no rule retains."""

    def __init__(self, protections: Protections, now: datetime, immutable: list[tuple[int, _TagMatcher]]) -> None:
        self.protections, self.now, self.immutable = protections, now, immutable

    def reasons(self, digest: str, tags: Iterable[str]) -> list[str]:
        protections, now, reasons = self.protections, self.now, []
        if digest in protections.protected:
            reasons.append("protected: explicitly protected digest")
        if digest in protections.in_use:
            reasons.append("protected: in use by a deployment")
        replaced = protections.replaced_at.get(digest)
        if replaced is not None and now - replaced <= protections.rollback_window:
            window = protections.rollback_window
            span = f"{window.days}-day" if window == timedelta(days=window.days) else str(window)
            reasons.append(
                f"protected: a deployment moved off it {_ago(now, replaced)}, within the {span} rollback window"
            )
        for tag in tags:
            for number, matches in self.immutable:
                if matches(tag):
                    reasons.append(f"protected: {tag} is immutable (immutable rule {number})")
                    break
        return reasons


def _decide(
    repository: str, digest: str, rows: list[TagRow], positions: list[int], ledger: _Ledger, guard: _Guard
) -> DigestDecision:
    """One digest's verdict from its rows' ledger entries, with one reason per row."""
    if len(positions) > 1:
        positions = sorted(positions, key=lambda position: rows[position].tag or "")
    kept, missed, masks = ledger.kept, ledger.missed, ledger.rules
    tags = [tag for position in positions if (tag := rows[position].tag) is not None]
    retained = any(kept[position] for position in positions)
    reasons = [] if retained else guard.reasons(digest, tags)
    keep = retained or bool(reasons)
    tail = "no rule retains it, but its digest is kept" if keep else "no rule retains it"
    retained_tags: list[str] = []
    mask = 0
    for position in positions:
        label = rows[position].tag or "<untagged>"
        if kept[position]:
            reasons.append(f"{label}: {kept[position]}")
            if masks[position]:
                mask |= masks[position]
                if rows[position].tag is not None:
                    retained_tags.append(label)
        else:
            reasons.append(f"{label}: {missed[position]}; {tail}" if missed[position] else f"{label}: {tail}")
    return DigestDecision(
        repository,
        digest,
        tuple(tags) if len(tags) < 2 else tuple(dict.fromkeys(tags)),
        len(tags) < len(positions),
        "keep" if keep else "delete",
        tuple(reasons),
        _indexes(mask),
        tuple(retained_tags) if len(retained_tags) < 2 else tuple(dict.fromkeys(retained_tags)),
    )


@functools.cache
def _indexes(mask: int) -> tuple[int, ...]:
    return tuple(index for index in range(mask.bit_length()) if mask >> index & 1)


def _abort_reason(decisions: list[DigestDecision], limits: Limits) -> str | None:
    total: dict[str, int] = defaultdict(int)
    deleting: dict[str, int] = defaultdict(int)
    for decision in decisions:
        total[decision.repository] += 1
        deleting[decision.repository] += decision.action == "delete"
    problems = []
    count = sum(deleting.values())
    if limits.max_deletions is not None and count > limits.max_deletions:
        problems.append(f"would delete {count} digests, more than max_deletions {limits.max_deletions}")
    if limits.max_percent is not None:
        for repository in sorted(deleting):
            percent = 100 * deleting[repository] / total[repository]
            if percent > limits.max_percent:
                problems.append(
                    f"would delete {deleting[repository]} of the {total[repository]} digests of {repository!r} "
                    f"({percent:.1f}%), more than max_percent {limits.max_percent:g}%"
                )
    return "; ".join(problems) or None


def _ago(now: datetime, when: datetime) -> str:
    delta = now - when
    if delta.days >= 1:
        return f"{delta.days} day{'s' if delta.days != 1 else ''} ago"
    if delta.days < 0:
        return "in the future"
    hours = delta.seconds // 3600
    return f"{hours} hour{'s' if hours != 1 else ''} ago" if hours else "less than an hour ago"


def _ordinal(number: int) -> str:
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"
