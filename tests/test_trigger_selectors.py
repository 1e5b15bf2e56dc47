"""Webhook scope rules: doublestar and regexp selectors over repositories and tags."""

from __future__ import annotations

import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.triggers.selectors import (
    RuleSelector,
    ScopeRule,
    SelectorError,
    parse_scope_rules,
    rules_match,
    scope_rules_to_json,
)

REPOSITORIES = st.from_regex(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*){0,4}", fullmatch=True)
TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,30}", fullmatch=True)
GLOB_PIECES = st.sampled_from(["*", "?", "a", "b", "v", "1", ".", "-", "[ab]", "[!a]", "[0-9]", "{a,b*}", "\\*"])
GLOBS = st.lists(GLOB_PIECES, max_size=6).map("".join)


def repo_rule(pattern: str, decoration: str = "repoMatches", kind: str = "doublestar") -> ScopeRule:
    return ScopeRule((), (RuleSelector(kind, decoration, pattern),))


def tag_rule(pattern: str, decoration: str = "matches", kind: str = "doublestar", extras: str = "") -> ScopeRule:
    return ScopeRule((RuleSelector(kind, decoration, pattern, extras),), ())


@pytest.mark.parametrize(
    ("pattern", "repository", "expected"),
    [
        ("**", "a/b/c", True),
        ("**", "api", True),
        ("*", "api", True),
        ("*", "team/api", False),
        ("team/*", "team/api", True),
        ("team/*", "team/a/b", False),
        ("team/**", "team/a/b", True),
        ("team/**", "team", False),  # a trailing /** needs one more segment, as in doublestar
        ("team/**/api", "team/api", True),
        ("team/**/api", "team/x/y/api", True),
        ("**/api", "api", True),
        ("**/api", "team/api", True),
        ("**/api", "team/api2", False),
        ("nginx-*", "nginx-alpine", True),
        ("nginx-?", "nginx-1", True),
        ("nginx-?", "nginx-12", False),
        ("a?c", "a/c", False),
        ("{api,web}", "web", True),
        ("{api,web}/*", "api/v1", True),
        ("{api,{web,ui}}", "ui", True),
        ("{,x-}api", "x-api", True),
        ("[a-c]pi", "bpi", True),
        ("[^a]pi", "api", False),
        ("[!a]pi", "bpi", True),
        ("a\\*", "a*", True),
        ("a\\*", "ab", False),
        ("team**", "team", True),  # ** inside a segment is a plain *
        ("team**", "team/x", False),
        ("", "anything/at/all", True),  # Harbor: an empty pattern matches everything
    ],
)
def test_doublestar_repositories(pattern: str, repository: str, expected: bool) -> None:
    assert rules_match([repo_rule(pattern)], repository, "latest") is expected


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("team/.*", "team/a/b", True),
        ("api", "team/api", False),  # full match, not search
        ("v[0-9]+\\.[0-9]+", "v1.20", True),
        ("v[0-9]+", "v1.20", False),
        ("", "x", True),
    ],
)
def test_regexp_is_a_full_match(pattern: str, value: str, expected: bool) -> None:
    assert rules_match([repo_rule(pattern, kind="regexp")], value, "t") is expected
    assert rules_match([tag_rule(pattern, kind="regexp")], "repo", value) is expected


@pytest.mark.parametrize(
    ("decoration", "extras", "accepts_untagged"),
    [
        ("matches", "", False),
        ("matches", '{"untagged": true}', True),
        ("matches", '{"untagged": false}', False),
        ("matches", "{}", False),
        ("excludes", "", True),
        ("excludes", '{"untagged": false}', True),
        ("excludes", '{"untagged": true}', False),
    ],
)
def test_untagged_events(decoration: str, extras: str, accepts_untagged: bool) -> None:
    rule = tag_rule("**", decoration, extras=extras)
    assert rules_match([rule], "repo", None) is accepts_untagged


def test_repo_selectors_ignore_the_tag_and_tag_selectors_ignore_the_repository() -> None:
    assert rules_match([repo_rule("api")], "api", None)
    assert rules_match([tag_rule("v*")], "any/where", "v1")


def test_rules_are_or_and_selectors_are_and() -> None:
    rule = ScopeRule(
        (RuleSelector("doublestar", "matches", "v*"), RuleSelector("doublestar", "excludes", "*-rc*")),
        (RuleSelector("doublestar", "repoMatches", "team/**"), RuleSelector("regexp", "repoExcludes", ".*-test")),
    )
    assert rules_match([rule], "team/api", "v1.0")
    assert not rules_match([rule], "team/api", "v1.0-rc1")
    assert not rules_match([rule], "team/api-test", "v1.0")
    assert not rules_match([rule], "other/api", "v1.0")
    assert rules_match([rule, repo_rule("other/*")], "other/api", "v1.0")
    assert rules_match([], "anything", None)


WIRE: list[dict[str, Any]] = [
    {
        "tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "v*", "extras": ""}],
        "scope_selectors": {
            "repository": [{"kind": "regexp", "decoration": "repoExcludes", "pattern": ".*-test", "extras": ""}]
        },
        "repo_scope_mode": "regular",
    },
    {
        "tag_selectors": [
            {"kind": "doublestar", "decoration": "excludes", "pattern": "", "extras": '{"untagged": true}'}
        ],
        "scope_selectors": {"repository": []},
        "repo_scope_mode": "",
    },
]


def test_wire_round_trip() -> None:
    rules = parse_scope_rules(WIRE)
    assert scope_rules_to_json(rules) == WIRE
    assert parse_scope_rules(scope_rules_to_json(rules)) == rules


def test_missing_optional_parts_default() -> None:
    [rule] = parse_scope_rules([{"tag_selectors": [{"kind": "doublestar", "decoration": "matches", "pattern": "*"}]}])
    assert rule == ScopeRule((RuleSelector("doublestar", "matches", "*"),), ())
    assert parse_scope_rules(None) == ()
    assert parse_scope_rules([]) == ()
    assert parse_scope_rules([{"scope_selectors": None, "tag_selectors": None, "repo_scope_mode": None}]) == (
        ScopeRule((), ()),
    )


def selector(**overrides: object) -> dict[str, object]:
    return {"kind": "doublestar", "decoration": "matches", "pattern": "*", "extras": "", **overrides}


def repo_selector(**overrides: object) -> dict[str, object]:
    return selector(decoration="repoMatches", **overrides)


@pytest.mark.parametrize(
    ("raw", "field", "message"),
    [
        ({"x": 1}, "scope_rules", "expected a list"),
        (["rule"], "scope_rules[0]", "expected an object"),
        ([{"bogus": 1}], "scope_rules[0].bogus", "unknown field"),
        ([{"tag_selectors": {}}], "scope_rules[0].tag_selectors", "expected a list"),
        ([{"tag_selectors": [selector(), "x"]}], "scope_rules[0].tag_selectors[1]", "expected an object"),
        ([{"tag_selectors": [selector(kind="glob")]}], "scope_rules[0].tag_selectors[0].kind", "must be one of"),
        ([{"tag_selectors": [selector(decoration="nsMatches")]}], "scope_rules[0].tag_selectors[0].decoration", ""),
        ([{"tag_selectors": [selector(decoration="repoMatches")]}], "scope_rules[0].tag_selectors[0].decoration", ""),
        ([{}, {"tag_selectors": [selector(pattern="[")]}], "scope_rules[1].tag_selectors[0].pattern", "unclosed '['"),
        ([{"tag_selectors": [selector(pattern="{a,b")]}], "scope_rules[0].tag_selectors[0].pattern", "unclosed '{'"),
        ([{"tag_selectors": [selector(pattern="{a/b,c}")]}], "scope_rules[0].tag_selectors[0].pattern", "unclosed"),
        ([{"tag_selectors": [selector(pattern="[z-a]")]}], "scope_rules[0].tag_selectors[0].pattern", "class"),
        ([{"tag_selectors": [selector(pattern="[.-0]")]}], "scope_rules[0].tag_selectors[0].pattern", "match '/'"),
        ([{"tag_selectors": [selector(pattern="a\\")]}], "scope_rules[0].tag_selectors[0].pattern", "backslash"),
        ([{"tag_selectors": [selector(pattern="x" * 513)]}], "scope_rules[0].tag_selectors[0].pattern", "longer"),
        ([{"tag_selectors": [selector(kind="regexp", pattern="(")]}], "scope_rules[0].tag_selectors[0].pattern", ""),
        (
            [{"tag_selectors": [selector(kind="regexp", pattern="(?!x)")]}],
            "scope_rules[0].tag_selectors[0].pattern",
            "",
        ),
        ([{"tag_selectors": [selector(pattern=None)]}], "scope_rules[0].tag_selectors[0].pattern", "required"),
        ([{"tag_selectors": [selector(pattern=3)]}], "scope_rules[0].tag_selectors[0].pattern", "expected a string"),
        ([{"tag_selectors": [selector(extras="yes")]}], "scope_rules[0].tag_selectors[0].extras", "JSON object"),
        ([{"tag_selectors": [selector(extras="[]")]}], "scope_rules[0].tag_selectors[0].extras", "JSON object"),
        ([{"tag_selectors": [selector(extras='{"untagged": 1}')]}], "scope_rules[0].tag_selectors[0].extras", ""),
        ([{"tag_selectors": [selector(other=1)]}], "scope_rules[0].tag_selectors[0].other", "unknown field"),
        ([{"scope_selectors": []}], "scope_rules[0].scope_selectors", "expected an object"),
        ([{"scope_selectors": {"namespace": []}}], "scope_rules[0].scope_selectors.namespace", "unknown"),
        (
            [{"scope_selectors": {"repository": [repo_selector(), selector()]}}],
            "scope_rules[0].scope_selectors.repository[1].decoration",
            "repoMatches or repoExcludes",
        ),
        (
            [{"scope_selectors": {"repository": [repo_selector(pattern="a{")]}}],
            "scope_rules[0].scope_selectors.repository[0].pattern",
            "unclosed",
        ),
        ([{"repo_scope_mode": "fuzzy"}], "scope_rules[0].repo_scope_mode", "regular, selection"),
        ([{"repo_scope_mode": 1}], "scope_rules[0].repo_scope_mode", "expected a string"),
    ],
)
def test_invalid_rules_name_the_field_path(raw: object, field: str, message: str) -> None:
    with pytest.raises(SelectorError) as caught:
        parse_scope_rules(raw)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert message in caught.value.message


def test_globs_match_in_linear_time() -> None:
    # wcmatch's backtracking translation of this pattern does not finish within minutes.
    rule = repo_rule("**/a/" * 15 + "b")
    started = time.monotonic()
    assert not rules_match([rule], "a/" * 127 + "c", None)
    assert time.monotonic() - started < 1.0


@given(REPOSITORIES, st.one_of(st.none(), TAGS))
def test_doublestar_globstar_matches_every_repository(repository: str, tag: str | None) -> None:
    assert rules_match([repo_rule("**")], repository, tag)
    assert rules_match([repo_rule("**/" + repository.rsplit("/", 1)[-1])], repository, tag)


@given(REPOSITORIES)
def test_single_star_never_crosses_a_slash(repository: str) -> None:
    assert rules_match([repo_rule("*")], repository, None) is ("/" not in repository)


@given(REPOSITORIES, REPOSITORIES)
def test_a_literal_pattern_matches_only_itself(pattern: str, repository: str) -> None:
    assert rules_match([repo_rule(pattern)], repository, None) is (pattern == repository)


@given(GLOBS, TAGS, st.sampled_from(["", '{"untagged": true}', '{"untagged": false}']))
def test_matches_and_excludes_are_complements(pattern: str, tag: str, extras: str) -> None:
    included = rules_match([tag_rule(pattern, "matches", extras=extras)], "repo", tag)
    excluded = rules_match([tag_rule(pattern, "excludes", extras=extras)], "repo", tag)
    assert included is not excluded
    untagged_in = rules_match([tag_rule(pattern, "matches", extras=extras)], "repo", None)
    assert untagged_in is not rules_match([tag_rule(pattern, "excludes", extras=extras)], "repo", None)


@given(st.sampled_from(["(a+)+$", "v[0-9]+.*", "\\p{Greek}+", "(?i)LATEST", "[^/]+/api"]), st.text(max_size=300))
def test_regexp_never_raises_at_match_time(pattern: str, value: str) -> None:
    assert isinstance(rules_match([repo_rule(pattern, kind="regexp")], value, value), bool)


@given(st.text(max_size=40))
def test_any_pattern_either_parses_or_names_the_pattern(pattern: str) -> None:
    try:
        [rule] = parse_scope_rules([{"tag_selectors": [selector(pattern=pattern)]}])
    except SelectorError as exc:
        assert exc.field == "scope_rules[0].tag_selectors[0].pattern"
    else:
        assert isinstance(rules_match([rule], "repo", "latest"), bool)
