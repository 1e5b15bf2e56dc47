"""Retention planning: which digests a policy deletes, why, and what it never deletes."""

from __future__ import annotations

import fnmatch
import random
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from workers.retention.plan import DigestDecision, Limits, Plan, Protections, TagRow, plan_retention
from workers.retention.rules import EnterpriseRules, RuleSet, parse_basic_rules, parse_enterprise_rules
from workers.triggers.selectors import parse_scope_rules

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
NO_LIMITS = Limits()
NOTHING = Protections()


def days_ago(days: float) -> datetime:
    return NOW - timedelta(days=days)


def row(tag: str | None, digest: str, pushed: float, pulled: float | None = None, repo: str = "api") -> TagRow:
    return TagRow(repo, tag, f"sha256:{digest}", days_ago(pushed), None if pulled is None else days_ago(pulled))


def selector(decoration: str, pattern: str, extras: str = "") -> dict[str, str]:
    return {"kind": "doublestar", "decoration": decoration, "pattern": pattern, "extras": extras}


def rule(template: str, value: int | None = None, tags: str = "**", repos: str = "**", **extra: Any) -> dict[str, Any]:
    return {
        "template": template,
        "params": {} if value is None else {template: value},
        "tag_selectors": [selector("matches", tags)],
        "scope_selectors": {"repository": [selector("repoMatches", repos)]},
        **extra,
    }


def enterprise(*rules: dict[str, Any]) -> EnterpriseRules:
    return parse_enterprise_rules(list(rules))


def plan(
    rows: Sequence[TagRow], rules: RuleSet, protections: Protections = NOTHING, limits: Limits = NO_LIMITS
) -> Plan:
    return plan_retention(rows, rules, protections, NOW, limits)


def actions(result: Plan) -> dict[str, str]:
    return {decision.digest.removeprefix("sha256:"): decision.action for decision in result.decisions}


def decision(result: Plan, digest: str, repository: str = "api") -> DigestDecision:
    return next(d for d in result.decisions if d.digest == f"sha256:{digest}" and d.repository == repository)


# --- basic edition ---------------------------------------------------------------------------


def test_date_rule_keeps_tags_pushed_within_days_inclusive() -> None:
    rows = [row("v1", "a", 40), row("v2", "b", 30), row("v3", "c", 29.9)]
    result = plan(rows, parse_basic_rules("or", [{"template": "date_rule", "params": {"days": "30"}}]))
    assert actions(result) == {"a": "delete", "b": "keep", "c": "keep"}
    assert decision(result, "a").reasons == ("v1: pushed 40 days ago, older than 30 days (rule 0); no rule retains it",)
    assert decision(result, "b").reasons == ("v2: pushed 30 days ago, within 30 days (rule 0)",)
    assert decision(result, "b").rules == (0,)


def test_tag_rule_keeps_the_n_most_recently_pushed_and_breaks_ties_by_tag_name() -> None:
    rows = [row("v1", "a", 5), row("b-tie", "b", 3), row("a-tie", "c", 3), row("v4", "d", 1)]
    result = plan(rows, parse_basic_rules("or", [{"template": "tag_rule", "params": {"num": 2}}]))
    assert actions(result) == {"a": "delete", "b": "delete", "c": "keep", "d": "keep"}
    assert decision(result, "c").reasons == ("a-tie: 2nd most recently pushed, within the latest 2 (rule 0)",)
    assert decision(result, "b").reasons == ("b-tie: beyond the latest 2 by push time (rule 0); no rule retains it",)


def test_basic_exceptions_are_always_kept_and_take_no_place_in_the_count() -> None:
    exceptions = [{"kind": "label", "pattern": "stable"}, {"kind": "regexp", "pattern": "^release-"}]
    rows = [row("stable", "a", 1), row("release-1", "b", 90), row("v3", "c", 2), row("v2", "d", 3)]
    rules = parse_basic_rules("or", [{"template": "tag_rule", "params": {"num": 1}, "tag_selectors": exceptions}])
    result = plan(rows, rules)
    assert actions(result) == {"a": "keep", "b": "keep", "c": "keep", "d": "delete"}
    assert decision(result, "a").reasons == ("stable: exception label 'stable' (rule 0)",)
    assert decision(result, "b").reasons == ("release-1: exception regexp '^release-' (rule 0)",)


def test_basic_date_rule_exceptions_keep_old_tags() -> None:
    rules = parse_basic_rules(
        "or", [{"template": "date_rule", "params": {"days": 7}, "tag_selectors": [{"kind": "label", "pattern": "v1"}]}]
    )
    assert actions(plan([row("v1", "a", 100), row("v2", "b", 100)], rules)) == {"a": "keep", "b": "delete"}


def test_basic_rules_are_or_ed() -> None:
    rules = parse_basic_rules(
        "or",
        [{"template": "date_rule", "params": {"days": 10}}, {"template": "tag_rule", "params": {"num": 1}}],
    )
    rows = [row("old-newest", "a", 20), row("older", "b", 30), row("recent", "c", 5, repo="web")]
    result = plan([*rows, row("old", "d", 50, repo="web")], rules)
    assert [(d.repository, d.digest[-1], d.action, d.rules) for d in result.decisions] == [
        ("api", "a", "keep", (1,)),
        ("api", "b", "delete", ()),
        ("web", "c", "keep", (0, 1)),
        ("web", "d", "delete", ()),
    ]


def test_basic_rules_never_delete_untagged_digests() -> None:
    rules = parse_basic_rules("or", [{"template": "tag_rule", "params": {"num": 1}}])
    result = plan([row(None, "a", 400), row("v1", "b", 1)], rules)
    assert actions(result) == {"a": "keep", "b": "keep"}
    assert decision(result, "a").reasons == ("<untagged>: untagged; basic rules only manage tags",)
    assert decision(result, "a").untagged and decision(result, "a").tags == ()


# --- enterprise templates --------------------------------------------------------------------


def test_latest_pushed_k_counts_only_selected_tags() -> None:
    rows = [row("v3", "a", 1), row("main-1", "b", 2), row("v2", "c", 3), row("v1", "d", 4)]
    result = plan(rows, enterprise(rule("latestPushedK", 2, tags="v*")))
    assert actions(result) == {"a": "keep", "b": "delete", "c": "keep", "d": "delete"}
    assert decision(result, "b").reasons == ("main-1: not selected by rule 0; no rule retains it",)
    assert decision(result, "c").retained_tags == ("v2",)


def test_latest_pushed_zero_retains_nothing() -> None:
    assert set(actions(plan([row("v1", "a", 1)], enterprise(rule("latestPushedK", 0)))).values()) == {"delete"}


def test_latest_pulled_n_ranks_never_pulled_last_and_lets_them_fill_spare_places() -> None:
    rows = [row("a", "a", 1), row("b", "b", 9, pulled=1), row("c", "c", 8, pulled=5), row("d", "d", 2)]
    result = plan(rows, enterprise(rule("latestPulledN", 3)))
    assert actions(result) == {"a": "keep", "b": "keep", "c": "keep", "d": "delete"}
    assert decision(result, "b").reasons == ("b: 1st most recently pulled, within the latest 3 (rule 0)",)
    assert decision(result, "a").reasons == (
        "a: 3rd most recently pulled (never pulled), within the latest 3 (rule 0)",
    )
    assert decision(result, "d").reasons == ("d: beyond the latest 3 by pull time (rule 0); no rule retains it",)


def test_n_days_since_last_push() -> None:
    result = plan([row("new", "a", 3), row("old", "b", 11)], enterprise(rule("nDaysSinceLastPush", 10)))
    assert actions(result) == {"a": "keep", "b": "delete"}
    assert decision(result, "a").reasons == ("new: pushed 3 days ago, within 10 days (rule 0)",)


def test_n_days_since_last_pull() -> None:
    rows = [row("hot", "a", 300, pulled=2), row("cold", "b", 300, pulled=40), row("never", "c", 1)]
    result = plan(rows, enterprise(rule("nDaysSinceLastPull", 30)))
    assert actions(result) == {"a": "keep", "b": "delete", "c": "delete"}
    assert decision(result, "b").reasons == (
        "cold: pulled 40 days ago, older than 30 days (rule 0); no rule retains it",
    )
    assert decision(result, "c").reasons == ("never: never pulled (rule 0); no rule retains it",)


def test_always_keeps_every_selected_tag() -> None:
    rows = [row("release-1", "a", 900), row("main-1", "b", 900)]
    result = plan(rows, enterprise(rule("always", tags="release-*")))
    assert actions(result) == {"a": "keep", "b": "delete"}
    assert decision(result, "a").reasons == ("release-1: always retained (rule 0)",)


def test_ages_under_a_day_are_given_in_hours() -> None:
    result = plan([row("v1", "a", 0.25), row("v2", "b", 0.01)], enterprise(rule("nDaysSinceLastPush", 1)))
    assert decision(result, "a").reasons == ("v1: pushed 6 hours ago, within 1 days (rule 0)",)
    assert decision(result, "b").reasons == ("v2: pushed less than an hour ago, within 1 days (rule 0)",)


# --- selectors -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("tag_selectors", "kept"),
    [
        ([selector("matches", "v*")], {"v1", "v1-rc"}),
        ([selector("excludes", "*-rc")], {"v1", "main"}),
        ([selector("matches", "v*"), selector("excludes", "*-rc")], {"v1"}),
        ([{"kind": "regexp", "decoration": "matches", "pattern": "v[0-9]+", "extras": ""}], {"v1"}),
        ([selector("matches", "{main,v1}")], {"v1", "main"}),
        ([], {"v1", "v1-rc", "main"}),
    ],
)
def test_tag_selectors(tag_selectors: list[dict[str, str]], kept: set[str]) -> None:
    rows = [row("v1", "a", 1), row("v1-rc", "b", 1), row("main", "c", 1)]
    result = plan(rows, enterprise({**rule("always"), "tag_selectors": tag_selectors}))
    assert {tag for d in result.kept for tag in d.tags} == kept


@pytest.mark.parametrize(
    ("tag_selector", "untagged_kept"),
    [
        (selector("matches", "**"), True),  # Harbor's default: matches selects untagged artifacts
        (selector("matches", "**", '{"untagged": false}'), False),
        (selector("excludes", "nothing"), True),
        (selector("excludes", "nothing", '{"untagged": true}'), False),
    ],
)
def test_untagged_artifacts_follow_the_extras(tag_selector: dict[str, str], untagged_kept: bool) -> None:
    rows = [row(None, "a", 1), row("v1", "b", 1)]
    result = plan(rows, enterprise({**rule("always"), "tag_selectors": [tag_selector]}))
    assert (decision(result, "a").action == "keep") is untagged_kept
    assert decision(result, "a").untagged


def test_repository_selectors_and_uncovered_repositories() -> None:
    rows = [row("v1", "a", 99, repo="team/api"), row("v1", "b", 99, repo="web"), row("v1", "c", 99, repo="team/db")]
    rules = enterprise(rule("nDaysSinceLastPush", 7, repos="team/*"), rule("always", repos="team/db"))
    result = plan(rows, rules)
    assert [(d.repository, d.action) for d in result.decisions] == [
        ("team/api", "delete"),
        ("team/db", "keep"),
        ("web", "keep"),
    ]
    assert decision(result, "b", "web").reasons == ("v1: no enabled rule covers repository 'web'",)


def test_repo_excludes() -> None:
    rules = enterprise(
        {**rule("latestPushedK", 0), "scope_selectors": {"repository": [selector("repoExcludes", "web")]}}
    )
    result = plan([row("v1", "a", 1, repo="api"), row("v1", "b", 1, repo="web")], rules)
    assert [(d.repository, d.action) for d in result.decisions] == [("api", "delete"), ("web", "keep")]


def test_disabled_rules_are_skipped_but_keep_their_index() -> None:
    rules = enterprise(rule("always", disabled=True), rule("latestPushedK", 1))
    result = plan([row("v1", "a", 1), row("v2", "b", 2)], rules)
    assert actions(result) == {"a": "keep", "b": "delete"}
    assert decision(result, "a").rules == (1,)
    only_disabled = plan([row("v1", "a", 1)], enterprise(rule("latestPushedK", 0, disabled=True)))
    assert actions(only_disabled) == {"a": "keep"}


def test_enterprise_without_rules_deletes_nothing() -> None:
    assert actions(plan([row("v1", "a", 1)], parse_enterprise_rules([]))) == {"a": "keep"}


# --- digests, siblings, protections ----------------------------------------------------------


def test_a_retained_sibling_keeps_the_digest() -> None:
    rows = [row("v1", "a", 50), row("latest", "a", 1), row("v0", "b", 60)]
    result = plan(rows, enterprise(rule("nDaysSinceLastPush", 7)))
    assert actions(result) == {"a": "keep", "b": "delete"}
    assert decision(result, "a").tags == ("latest", "v1")
    assert decision(result, "a").retained_tags == ("latest",)
    assert decision(result, "a").reasons == (
        "latest: pushed 1 day ago, within 7 days (rule 0)",
        "v1: pushed 50 days ago, older than 7 days (rule 0); no rule retains it, but its digest is kept",
    )


def test_a_digest_is_deleted_when_every_tag_on_it_is_a_candidate() -> None:
    rows = [row("v1", "a", 50), row("v1-alias", "a", 40), row(None, "a", 60)]
    result = plan(rows, enterprise(rule("nDaysSinceLastPush", 7)))
    assert decision(result, "a").action == "delete"
    assert len(decision(result, "a").reasons) == 3


def test_immutable_tags_protect_their_digest() -> None:
    immutable = parse_scope_rules(
        [
            {
                "tag_selectors": [selector("matches", "v1.*")],
                "scope_selectors": {"repository": [selector("repoMatches", "api")]},
            }
        ]
    )
    rows = [row("v1.0", "a", 99), row("v1.1", "b", 99, repo="web"), row("x", "c", 99), row("v1.2", "c", 99)]
    result = plan(rows, enterprise(rule("latestPushedK", 0)), Protections(immutable=immutable))
    assert [(d.repository, d.digest[-1], d.action) for d in result.decisions] == [
        ("api", "a", "keep"),
        ("api", "c", "keep"),
        ("web", "b", "delete"),
    ]
    assert decision(result, "c").reasons == (
        "protected: v1.2 is immutable (immutable rule 0)",
        "v1.2: beyond the latest 0 by push time (rule 0); no rule retains it, but its digest is kept",
        "x: beyond the latest 0 by push time (rule 0); no rule retains it, but its digest is kept",
    )


def test_untagged_digests_are_never_immutable() -> None:
    immutable = parse_scope_rules([{"tag_selectors": [selector("matches", "**")]}])
    result = plan([row(None, "a", 1)], enterprise(rule("latestPushedK", 0)), Protections(immutable=immutable))
    assert actions(result) == {"a": "delete"}


@pytest.mark.parametrize(
    ("protections", "reason"),
    [
        (Protections(in_use=frozenset({"sha256:a"})), "protected: in use by a deployment"),
        (Protections(protected=frozenset({"sha256:a"})), "protected: explicitly protected digest"),
        (
            Protections(replaced_at={"sha256:a": days_ago(2)}, rollback_window=timedelta(days=7)),
            "protected: a deployment moved off it 2 days ago, within the 7-day rollback window",
        ),
    ],
)
def test_deployment_and_explicit_protections(protections: Protections, reason: str) -> None:
    result = plan([row("v1", "a", 99), row("v2", "b", 99)], enterprise(rule("latestPushedK", 0)), protections)
    assert actions(result) == {"a": "keep", "b": "delete"}
    assert decision(result, "a").reasons[0] == reason


def test_the_rollback_window_ends() -> None:
    protections = Protections(replaced_at={"sha256:a": days_ago(8)}, rollback_window=timedelta(days=7))
    assert actions(plan([row("v1", "a", 99)], enterprise(rule("latestPushedK", 0)), protections)) == {"a": "delete"}


# --- blast radius ----------------------------------------------------------------------------


def ten_old_digests() -> list[TagRow]:
    return [row(f"v{n}", str(n), 100 + n) for n in range(10)]


@pytest.mark.parametrize(
    ("limits", "aborted", "reason"),
    [
        (Limits(max_deletions=7), False, None),
        (Limits(max_deletions=6), True, "would delete 7 digests, more than max_deletions 6"),
        (Limits(max_percent=70), False, None),
        (
            Limits(max_percent=69.5),
            True,
            "would delete 7 of the 10 digests of 'api' (70.0%), more than max_percent 69.5%",
        ),
        (Limits(max_deletions=0, max_percent=0), True, "more than max_deletions 0; would delete 7 of the 10"),
    ],
)
def test_blast_radius(limits: Limits, aborted: bool, reason: str | None) -> None:
    result = plan(ten_old_digests(), enterprise(rule("latestPushedK", 3)), limits=limits)
    assert result.aborted is aborted
    assert len(result.would_delete) == 7
    assert len(result.deletions) == (0 if aborted else 7)
    assert result.counts == {"tags": 10, "digests": 10, "kept": 3, "would_delete": 7, "deleted": len(result.deletions)}
    if reason is None:
        assert result.abort_reason is None
    else:
        assert result.abort_reason is not None and reason in result.abort_reason


def test_max_percent_is_per_repository() -> None:
    rows = [*ten_old_digests(), row("x", "x", 1, repo="web"), row("y", "y", 2, repo="web")]
    rules = enterprise(rule("latestPushedK", 9, repos="api"), rule("latestPushedK", 0, repos="web"))
    result = plan(rows, rules, limits=Limits(max_percent=50))  # 3 of 12 in all, but all of web
    assert result.deletions == ()
    assert result.abort_reason == "would delete 2 of the 2 digests of 'web' (100.0%), more than max_percent 50%"


def test_limits_and_now_are_validated() -> None:
    with pytest.raises(ValueError, match="max_deletions"):
        Limits(max_deletions=-1)
    with pytest.raises(ValueError, match="max_percent"):
        Limits(max_percent=101)
    with pytest.raises(ValueError, match="timezone-aware"):
        plan_retention([], enterprise(), NOTHING, NOW.replace(tzinfo=None), NO_LIMITS)


# --- properties ------------------------------------------------------------------------------

REPOSITORIES = ("api", "team/db")
TAG_POOL = ("v1", "v2", "v3", "v1-rc", "main", "latest", "release-1", "x")
TAG_PATTERNS = ("**", "v*", "*-rc", "release-*", "{main,latest}")
REPO_PATTERNS = ("**", "api", "team/*")
TEMPLATES = ("latestPushedK", "latestPulledN", "nDaysSinceLastPush", "nDaysSinceLastPull", "always")
CLOCK_FREE = ("latestPushedK", "latestPulledN", "always")  # the plan does not change as time passes


@st.composite
def snapshots(draw: st.DrawFn) -> list[TagRow]:
    """Unique (repository, tag) rows, untagged rows unique per digest, few digests so tags share them."""
    entries = draw(
        st.lists(
            st.tuples(
                st.sampled_from(REPOSITORIES),
                st.none() | st.sampled_from(TAG_POOL),
                st.integers(0, 6),
                st.integers(0, 40),
                st.none() | st.integers(0, 40),
            ),
            min_size=2,
            max_size=24,
        )
    )
    rows, seen = [], set()
    for repository, tag, digest, pushed, pulled in entries:
        key = (repository, tag, None if tag else digest)
        if key not in seen:
            seen.add(key)
            rows.append(row(tag, str(digest), pushed, pulled, repo=repository))
    return rows


@st.composite
def wire_rules(draw: st.DrawFn, templates: Sequence[str] = TEMPLATES) -> list[dict[str, Any]]:
    rules = []
    for _ in range(draw(st.integers(1, 3))):
        template = draw(st.sampled_from(templates))
        value = (
            None if template == "always" else draw(st.integers(0, 5) if "latest" in template else st.integers(0, 40))
        )
        tag_selectors = [
            selector(
                draw(st.sampled_from(["matches", "excludes"])),
                draw(st.sampled_from(TAG_PATTERNS)),
                draw(st.sampled_from(["", '{"untagged": false}', '{"untagged": true}'])),
            )
            for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2])))
        ]
        repos = draw(st.sampled_from(REPO_PATTERNS))
        disabled = draw(st.sampled_from([False, False, False, True]))
        rules.append({**rule(template, value, repos=repos, disabled=disabled), "tag_selectors": tag_selectors})
    return rules


def model_selects(tag_selector: dict[str, str], tag: str | None) -> bool:
    """Harbor's retention selectors, written out plainly: fnmatch equals doublestar for these tags."""
    matches = tag_selector["decoration"] == "matches"
    if tag is None:
        flag = matches if not tag_selector["extras"] else '"untagged": true' in tag_selector["extras"]
        return flag == matches
    patterns = tag_selector["pattern"].strip("{}").split(",")
    return any(fnmatch.fnmatchcase(tag, pattern) for pattern in patterns) == matches


def push_key(r: TagRow) -> tuple[float, str, str]:
    return (-r.pushed_at.timestamp(), r.tag or "", r.digest)


def pull_key(r: TagRow) -> tuple[bool, float, tuple[float, str, str]]:
    return (r.pulled_at is None, -(r.pulled_at or NOW).timestamp(), push_key(r))


def model_retained(rows: Sequence[TagRow], rules: list[dict[str, Any]], now: datetime) -> tuple[set[TagRow], set[str]]:
    """Rows some rule retains, and repositories some enabled rule covers (the reference model)."""
    retained: set[TagRow] = set()
    covered: set[str] = set()
    for repository in REPOSITORIES:
        for wire in rules:
            repo_pattern = wire["scope_selectors"]["repository"][0]["pattern"]
            if wire.get("disabled") or not fnmatch.fnmatchcase(repository, repo_pattern.replace("**", "*")):
                continue
            covered.add(repository)
            mine = [r for r in rows if r.repository == repository]
            eligible = [r for r in mine if all(model_selects(s, r.tag) for s in wire["tag_selectors"])]
            template, value = wire["template"], wire["params"].get(wire["template"], 0)
            if template == "latestPushedK":
                retained.update(sorted(eligible, key=push_key)[:value])
            elif template == "latestPulledN":
                retained.update(sorted(eligible, key=pull_key)[:value])
            elif template == "nDaysSinceLastPush":
                retained.update(r for r in eligible if r.pushed_at >= now - timedelta(days=value))
            elif template == "nDaysSinceLastPull":
                retained.update(r for r in eligible if r.pulled_at and r.pulled_at >= now - timedelta(days=value))
            else:
                retained.update(eligible)
    return retained, covered


@settings(max_examples=300)
@given(snapshots(), wire_rules())
def test_plan_matches_the_reference_model(rows: list[TagRow], rules: list[dict[str, Any]]) -> None:
    retained, covered = model_retained(rows, rules, NOW)
    by_digest: dict[tuple[str, str], list[TagRow]] = defaultdict(list)
    for r in rows:
        by_digest[r.repository, r.digest].append(r)
    expected = {
        key: "keep" if key[0] not in covered or any(r in retained for r in digest_rows) else "delete"
        for key, digest_rows in by_digest.items()
    }
    result = plan(rows, parse_enterprise_rules(rules))
    assert {(d.repository, d.digest): d.action for d in result.decisions} == expected
    for d in result.deletions:  # deleted only if every row on it is a candidate
        assert d.rules == () and d.retained_tags == ()
        assert all(reason.endswith("no rule retains it") for reason in d.reasons)
        assert not any(r in retained for r in by_digest[d.repository, d.digest])


@pytest.mark.parametrize(("template", "order"), [("latestPushedK", push_key), ("latestPulledN", pull_key)])
@given(rows=snapshots(), n=st.integers(0, 6), pattern=st.sampled_from(["v*", "**"]))
def test_keep_n_keeps_exactly_the_n_newest_selected_tags(
    template: str, order: Callable[[TagRow], Any], rows: list[TagRow], n: int, pattern: str
) -> None:
    wire = {**rule(template, n), "tag_selectors": [selector("matches", pattern, '{"untagged": false}')]}
    result = plan(rows, enterprise(wire))
    for repository in REPOSITORIES:
        eligible = [r for r in rows if r.repository == repository and r.tag and fnmatch.fnmatchcase(r.tag, pattern)]
        newest = {r.tag for r in sorted(eligible, key=order)[:n]}
        kept = {tag for d in result.decisions if d.repository == repository for tag in d.retained_tags}
        assert kept == newest
        assert len(kept) == min(n, len(eligible))


@given(snapshots(), st.integers(1, 6), st.sets(st.sampled_from(TAG_POOL), max_size=2))
def test_basic_tag_rule_keeps_the_n_newest_tags_besides_exceptions(
    rows: list[TagRow], n: int, labels: set[str]
) -> None:
    exceptions = [{"kind": "label", "pattern": label} for label in sorted(labels)]
    rules = parse_basic_rules("or", [{"template": "tag_rule", "params": {"num": n}, "tag_selectors": exceptions}])
    result = plan(rows, rules)
    for repository in REPOSITORIES:
        counted = [r for r in rows if r.repository == repository and r.tag and r.tag not in labels]
        expected = {r.tag for r in sorted(counted, key=push_key)[:n]}
        expected |= {r.tag for r in rows if r.repository == repository and r.tag in labels}
        assert {tag for d in result.decisions if d.repository == repository for tag in d.retained_tags} == expected


@given(snapshots(), wire_rules(), st.data())
def test_protected_digests_are_never_deleted(
    rows: list[TagRow], rules: list[dict[str, Any]], data: st.DataObject
) -> None:
    digests = sorted({r.digest for r in rows})
    pick = st.sets(st.sampled_from(digests), max_size=3) if digests else st.just(set[str]())
    pattern = data.draw(st.sampled_from(TAG_PATTERNS))
    protections = Protections(
        immutable=parse_scope_rules([{"tag_selectors": [selector("matches", pattern)]}]),
        in_use=frozenset(data.draw(pick)),
        protected=frozenset(data.draw(pick)),
        replaced_at={digest: days_ago(1) for digest in data.draw(pick)},
        rollback_window=timedelta(days=2),
    )
    result = plan(rows, parse_enterprise_rules(rules), protections)
    guarded = protections.in_use | protections.protected | set(protections.replaced_at)
    for d in result.deletions:
        assert d.digest not in guarded
        assert not any(model_selects(selector("matches", pattern, '{"untagged": false}'), tag) for tag in d.tags)


@given(snapshots(), wire_rules(), st.randoms(use_true_random=False))
def test_the_plan_does_not_depend_on_input_order(rows: list[TagRow], rules: list[dict[str, Any]], rng: Any) -> None:
    shuffled = list(rows)
    rng.shuffle(shuffled)
    limits = Limits(max_percent=50)
    assert plan(shuffled, parse_enterprise_rules(rules), limits=limits) == plan(
        rows, parse_enterprise_rules(rules), limits=limits
    )


def without_deletions(rows: Sequence[TagRow], result: Plan) -> list[TagRow]:
    deleted = {(d.repository, d.digest) for d in result.deletions}
    return [r for r in rows if (r.repository, r.digest) not in deleted]


@given(snapshots(), wire_rules())
def test_replanning_after_the_deletions_deletes_nothing_more(rows: list[TagRow], rules: list[dict[str, Any]]) -> None:
    """Idempotent for every template at the same ``now``: the rows a rule retains stay first."""
    parsed = parse_enterprise_rules(rules)
    assert plan(without_deletions(rows, plan(rows, parsed)), parsed).deletions == ()


@given(snapshots(), wire_rules(CLOCK_FREE), st.integers(0, 400))
def test_count_and_always_rules_stay_idempotent_as_time_passes(
    rows: list[TagRow], rules: list[dict[str, Any]], later: int
) -> None:
    """Day-based rules are not: tags age out of the window. Count-based and always rules are."""
    parsed = parse_enterprise_rules(rules)
    remaining = without_deletions(rows, plan(rows, parsed))
    assert plan_retention(remaining, parsed, NOTHING, NOW + timedelta(days=later), NO_LIMITS).deletions == ()


@given(snapshots(), st.integers(1, 5), st.integers(0, 400))
def test_basic_tag_rule_is_idempotent(rows: list[TagRow], n: int, later: int) -> None:
    rules = parse_basic_rules("or", [{"template": "tag_rule", "params": {"num": n}}])
    remaining = without_deletions(rows, plan(rows, rules))
    assert plan_retention(remaining, rules, NOTHING, NOW + timedelta(days=later), NO_LIMITS).deletions == ()


def test_day_rules_are_not_idempotent_as_time_passes() -> None:
    rules = enterprise(rule("nDaysSinceLastPush", 7))
    rows = [row("v1", "a", 1), row("v0", "b", 30)]
    remaining = without_deletions(rows, plan(rows, rules))
    assert [
        d.digest for d in plan_retention(remaining, rules, NOTHING, NOW + timedelta(days=7), NO_LIMITS).deletions
    ] == ["sha256:a"]


def test_planning_is_not_quadratic() -> None:
    size = 20_000
    rng = random.Random(5)
    rows = [
        TagRow(
            f"repo-{n // 500}", f"v{n}", f"sha256:{n // 2}", days_ago(rng.uniform(0, 365)), days_ago(rng.uniform(0, 30))
        )
        for n in range(size)
    ]
    rules = enterprise(rule("latestPushedK", 10, tags="v*"), rule("nDaysSinceLastPull", 7), rule("always", tags="v1*"))
    started = time.perf_counter()
    result = plan(rows, rules)
    assert time.perf_counter() - started < 2.0  # 100k take ~1 s here (bench/retention_plan.py)
    assert result.counts["tags"] == size
