"""Retention rules: parsing and validating SWR basic and enterprise (Harbor-style) rules."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.retention.rules import (
    HARBOR_UNTAGGED_DEFAULT,
    BasicRule,
    BasicRules,
    EnterpriseRule,
    RuleError,
    TagException,
    basic_rules_to_json,
    enterprise_rules_to_json,
    parse_basic_rules,
    parse_enterprise_rules,
)
from workers.triggers.selectors import RuleSelector, ScopeRule


def basic(template: str = "date_rule", params: Any = None, selectors: Any = None) -> dict[str, Any]:
    rule: dict[str, Any] = {"template": template, "params": params if params is not None else {"days": 30}}
    if selectors is not None:
        rule["tag_selectors"] = selectors
    return rule


def enterprise(template: str = "latestPushedK", **fields: Any) -> dict[str, Any]:
    rule: dict[str, Any] = {"template": template}
    if template != "always":
        rule["params"] = {template: 10}
    rule.update(fields)
    return rule


def selector(decoration: str, pattern: str, kind: str = "doublestar", extras: str = "") -> dict[str, str]:
    return {"kind": kind, "decoration": decoration, "pattern": pattern, "extras": extras}


# --- basic edition ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("params", "template", "value"),
    [
        ({"days": 30}, "date_rule", 30),
        ({"days": "30"}, "date_rule", 30),  # SWR's documented example sends strings
        ({"days": 1}, "date_rule", 1),
        ({"days": 36500}, "date_rule", 36500),
        ({"num": 5}, "tag_rule", 5),
        ({"num": "007"}, "tag_rule", 7),
        ({"num": 32766}, "tag_rule", 32766),
    ],
)
def test_basic_params(params: dict[str, Any], template: str, value: int) -> None:
    parsed = parse_basic_rules("or", [basic(template, params)])
    assert parsed == BasicRules((BasicRule(template, value),))


def test_basic_exceptions_are_parsed_in_order() -> None:
    selectors = [{"kind": "label", "pattern": "v5"}, {"kind": "regexp", "pattern": "^123$"}]
    parsed = parse_basic_rules("or", [basic(selectors=selectors)])
    assert parsed.rules[0].exceptions == (TagException("label", "v5"), TagException("regexp", "^123$"))


@pytest.mark.parametrize(
    ("algorithm", "rules", "field", "message"),
    [
        ("and", [basic()], "algorithm", 'must be "or"'),
        (None, [basic()], "algorithm", 'must be "or"'),
        ("or", {"template": "date_rule"}, "rules", "expected a list"),
        ("or", [], "rules", "at least one rule"),
        ("or", [basic()] * 16, "rules", "at most 15"),
        ("or", ["date_rule"], "rules[0]", "expected an object"),
        ("or", [{**basic(), "scope": "x"}], "rules[0].scope", "unknown field"),
        ("or", [basic("latestPushedK")], "rules[0].template", "must be one of date_rule, tag_rule"),
        ("or", [{"template": "date_rule"}], "rules[0].params", "is required"),
        ("or", [basic(params=[30])], "rules[0].params", "expected an object"),
        ("or", [basic(params={"num": 3})], "rules[0].params.num", "unknown field; expected one of days"),
        ("or", [basic(params={})], "rules[0].params.days", "is required"),
        ("or", [basic(params={"days": 0})], "rules[0].params.days", "between 1 and 36500, got 0"),
        ("or", [basic(params={"days": -1})], "rules[0].params.days", "between 1 and 36500"),
        ("or", [basic(params={"days": 36501})], "rules[0].params.days", "between 1 and 36500"),
        ("or", [basic(params={"days": "0"})], "rules[0].params.days", "between 1 and 36500"),
        ("or", [basic(params={"days": True})], "rules[0].params.days", "expected an integer"),
        ("or", [basic(params={"days": 1.5})], "rules[0].params.days", "expected an integer"),
        ("or", [basic(params={"days": "30d"})], "rules[0].params.days", "expected an integer"),
        ("or", [basic(params={"days": " 30"})], "rules[0].params.days", "expected an integer"),
        ("or", [basic("tag_rule", {"num": 0})], "rules[0].params.num", "between 1 and 32766"),
        ("or", [basic("tag_rule", {"num": 32767})], "rules[0].params.num", "between 1 and 32766"),
        ("or", [basic(), basic(selectors={})], "rules[1].tag_selectors", "expected a list"),
        ("or", [basic(selectors=[{"kind": "glob", "pattern": "x"}])], "rules[0].tag_selectors[0].kind", "label"),
        ("or", [basic(selectors=[{"pattern": "x"}])], "rules[0].tag_selectors[0].kind", "is required"),
        ("or", [basic(selectors=[{"kind": "label", "pattern": 5}])], "rules[0].tag_selectors[0].pattern", "string"),
        ("or", [basic(selectors=[{"kind": "label", "pattern": "a b"}])], "rules[0].tag_selectors[0].pattern", "tag"),
        ("or", [basic(selectors=[{"kind": "label", "pattern": ""}])], "rules[0].tag_selectors[0].pattern", "tag"),
        ("or", [basic(selectors=[{"kind": "regexp", "pattern": "(a"}])], "rules[0].tag_selectors[0].pattern", "regexp"),
        ("or", [basic(selectors=[{"kind": "regexp", "pattern": "(?=a)"}])], "rules[0].tag_selectors[0].pattern", ""),
        (
            "or",
            [basic(selectors=[{"kind": "regexp", "pattern": "a" * 513}])],
            "rules[0].tag_selectors[0].pattern",
            "512",
        ),
    ],
)
def test_basic_errors_name_the_field(algorithm: Any, rules: Any, field: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_basic_rules(algorithm, rules)
    assert caught.value.field == field
    assert message in caught.value.message


@pytest.mark.parametrize(
    ("kind", "pattern", "tag", "expected"),
    [
        ("label", "v5", "v5", True),
        ("label", "v5", "v50", False),
        ("regexp", "^123$", "123", True),
        ("regexp", "^123$", "1234", False),
        ("regexp", "rc", "1.0-rc1", True),  # unanchored, like Go's MatchString
        ("regexp", "^v1\\.", "v1.2.3", True),
        ("regexp", "^v1\\.", "v10.0", False),
    ],
)
def test_exception_matching(kind: str, pattern: str, tag: str, expected: bool) -> None:
    assert TagException(kind, pattern).matches(tag) is expected


# --- enterprise edition ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("template", "value"),
    [("latestPushedK", 10), ("latestPulledN", 10), ("nDaysSinceLastPush", 10), ("nDaysSinceLastPull", 10)],
)
def test_enterprise_templates_use_harbor_param_names(template: str, value: int) -> None:
    parsed = parse_enterprise_rules([enterprise(template)])
    assert parsed.rules == (EnterpriseRule(template, value),)


def test_enterprise_always_has_no_value_and_accepts_empty_params() -> None:
    assert parse_enterprise_rules([enterprise("always", params={})]).rules == (EnterpriseRule("always", None),)
    assert parse_enterprise_rules([enterprise("always")]).rules == (EnterpriseRule("always", None),)


def test_enterprise_rule_fields() -> None:
    raw = enterprise(
        "nDaysSinceLastPull",
        id=7,
        priority=3,
        disabled=True,
        action="retain",
        params={"nDaysSinceLastPull": "0"},
        tag_selectors=[selector("excludes", "*-rc*")],
        scope_selectors={"repository": [selector("repoMatches", "team/**")]},
        repo_scope_mode="regular",
    )
    (rule,) = parse_enterprise_rules([raw]).rules
    assert rule == EnterpriseRule(
        "nDaysSinceLastPull",
        0,
        ScopeRule(
            (RuleSelector("doublestar", "excludes", "*-rc*"),),
            (RuleSelector("doublestar", "repoMatches", "team/**"),),
            "regular",
        ),
        priority=3,
        disabled=True,
    )


@pytest.mark.parametrize(
    ("extras", "stored", "selects_untagged"),
    [
        ("", HARBOR_UNTAGGED_DEFAULT, True),  # Harbor's retention default keeps untagged artifacts
        ("  ", HARBOR_UNTAGGED_DEFAULT, True),
        ('{"untagged": false}', '{"untagged": false}', False),
        ('{"untagged": true}', '{"untagged": true}', True),
        ("{}", "{}", False),
    ],
)
def test_untagged_extras_on_matches(extras: str, stored: str, selects_untagged: bool) -> None:
    (rule,) = parse_enterprise_rules([enterprise(tag_selectors=[selector("matches", "**", extras=extras)])]).rules
    (tag_selector,) = rule.scope.tag_selectors
    assert tag_selector.extras == stored
    assert tag_selector.accepts("api", None) is selects_untagged


@pytest.mark.parametrize(("extras", "selects_untagged"), [("", True), ('{"untagged": true}', False)])
def test_untagged_extras_on_excludes_follow_harbor(extras: str, selects_untagged: bool) -> None:
    (rule,) = parse_enterprise_rules([enterprise(tag_selectors=[selector("excludes", "x", extras=extras)])]).rules
    assert rule.scope.tag_selectors[0].extras == extras
    assert rule.scope.tag_selectors[0].accepts("api", None) is selects_untagged


@pytest.mark.parametrize(
    ("rules", "field", "message"),
    [
        ({"template": "always"}, "rules", "expected a list"),
        ([enterprise()] * 16, "rules", "at most 15"),
        ([enterprise(), 3], "rules[1]", "expected an object"),
        ([enterprise(name="x")], "rules[0].name", "unknown field"),
        ([enterprise("latestK")], "rules[0].template", "must be one of latestPushedK"),
        ([enterprise("date_rule")], "rules[0].template", "must be one of"),
        ([enterprise(action="delete")], "rules[0].action", 'must be "retain"'),
        ([enterprise(priority="1")], "rules[0].priority", "expected an integer"),
        ([enterprise(priority=True)], "rules[0].priority", "expected an integer"),
        ([enterprise(disabled="false")], "rules[0].disabled", "expected true or false"),
        ([enterprise(params=None)], "rules[0].params", "is required"),
        ([enterprise(params={"k": 1})], "rules[0].params.k", "unknown field; expected one of latestPushedK"),
        ([enterprise(params={"latestPushedK": -1})], "rules[0].params.latestPushedK", "between 0 and 32766"),
        ([enterprise(params={"latestPushedK": 32767})], "rules[0].params.latestPushedK", "between 0 and 32766"),
        (
            [enterprise("nDaysSinceLastPush", params={"nDaysSinceLastPush": 36501})],
            "rules[0].params.nDaysSinceLastPush",
            "between 0 and 36500",
        ),
        ([enterprise("always", params={"always": 1})], "rules[0].params", "no parameters"),
        ([enterprise(), enterprise(tag_selectors="**")], "rules[1].tag_selectors", "expected a list"),
        ([enterprise(tag_selectors=[selector("matches", "[")])], "rules[0].tag_selectors[0].pattern", "doublestar"),
        ([enterprise(tag_selectors=[selector("matches", "(", "regexp")])], "rules[0].tag_selectors[0].pattern", ""),
        ([enterprise(tag_selectors=[selector("matches", "*", "label")])], "rules[0].tag_selectors[0].kind", ""),
        ([enterprise(tag_selectors=[selector("repoMatches", "*")])], "rules[0].tag_selectors[0].decoration", ""),
        ([enterprise(tag_selectors=[selector("matches", "*", extras="x")])], "rules[0].tag_selectors[0].extras", ""),
        (
            [enterprise(), enterprise(scope_selectors={"repository": [selector("matches", "*")]})],
            "rules[1].scope_selectors.repository[0].decoration",
            "repoMatches or repoExcludes",
        ),
        ([enterprise(scope_selectors={"project": []})], "rules[0].scope_selectors.project", "unknown field"),
        ([enterprise(repo_scope_mode="all")], "rules[0].repo_scope_mode", "regular, selection"),
    ],
)
def test_enterprise_errors_name_the_field(rules: Any, field: str, message: str) -> None:
    with pytest.raises(RuleError) as caught:
        parse_enterprise_rules(rules)
    assert caught.value.field == field
    assert message in caught.value.message


def test_enterprise_without_rules_is_allowed() -> None:
    assert parse_enterprise_rules(None).rules == ()
    assert parse_enterprise_rules([]).rules == ()


# --- round trips and robustness --------------------------------------------------------------

TAG_PATTERNS = st.sampled_from(["**", "v*", "*-rc*", "{a,b}*", "release-?"])
REPO_PATTERNS = st.sampled_from(["**", "team/*", "api", "team/**/db"])
EXTRAS = st.sampled_from(["", '{"untagged": false}', '{"untagged": true}'])
COUNTS = st.one_of(st.integers(1, 500), st.integers(1, 500).map(str))


@st.composite
def basic_bodies(draw: st.DrawFn) -> list[dict[str, Any]]:
    rules = []
    for _ in range(draw(st.integers(1, 4))):
        template = draw(st.sampled_from(["date_rule", "tag_rule"]))
        name = "days" if template == "date_rule" else "num"
        exceptions = draw(
            st.lists(
                st.one_of(
                    st.builds(
                        lambda tag: {"kind": "label", "pattern": tag}, st.from_regex(r"[a-z0-9]{1,8}", fullmatch=True)
                    ),
                    st.builds(
                        lambda rx: {"kind": "regexp", "pattern": rx}, st.sampled_from(["^v1", "rc$", "^[0-9]+$"])
                    ),
                ),
                max_size=3,
            )
        )
        rules.append({"template": template, "params": {name: draw(COUNTS)}, "tag_selectors": exceptions})
    return rules


@st.composite
def enterprise_bodies(draw: st.DrawFn) -> list[dict[str, Any]]:
    rules = []
    for priority in range(draw(st.integers(0, 4))):
        template = draw(
            st.sampled_from(["latestPushedK", "latestPulledN", "nDaysSinceLastPush", "nDaysSinceLastPull", "always"])
        )
        rule: dict[str, Any] = {
            "priority": priority,
            "disabled": draw(st.booleans()),
            "template": template,
            "params": {} if template == "always" else {template: draw(COUNTS)},
            "tag_selectors": [
                selector(draw(st.sampled_from(["matches", "excludes"])), draw(TAG_PATTERNS), extras=draw(EXTRAS))
                for _ in range(draw(st.integers(0, 2)))
            ],
            "scope_selectors": {
                "repository": [
                    selector(draw(st.sampled_from(["repoMatches", "repoExcludes"])), draw(REPO_PATTERNS))
                    for _ in range(draw(st.integers(0, 1)))
                ]
            },
        }
        rules.append(rule)
    return rules


@given(basic_bodies())
def test_basic_round_trip(body: list[dict[str, Any]]) -> None:
    parsed = parse_basic_rules("or", body)
    wire = basic_rules_to_json(parsed)
    assert parse_basic_rules(**wire) == parsed
    assert json.loads(json.dumps(wire)) == wire


@given(enterprise_bodies())
def test_enterprise_round_trip(body: list[dict[str, Any]]) -> None:
    parsed = parse_enterprise_rules(body)
    wire = enterprise_rules_to_json(parsed)
    assert parse_enterprise_rules(wire) == parsed
    assert enterprise_rules_to_json(parse_enterprise_rules(wire)) == wire


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 40000) | st.floats(allow_nan=False) | st.text(max_size=6),
    lambda children: (
        st.lists(children, max_size=3)
        | st.dictionaries(
            st.sampled_from(
                [
                    "template",
                    "params",
                    "days",
                    "num",
                    "tag_selectors",
                    "kind",
                    "pattern",
                    "decoration",
                    "latestPushedK",
                    "always",
                    "scope_selectors",
                    "repository",
                    "extras",
                    "disabled",
                    "action",
                    "x",
                ]
            ),
            children,
            max_size=4,
        )
    ),
    max_leaves=12,
)


@given(JSON)
def test_parsers_raise_only_rule_errors(raw: Any) -> None:
    for parse in (lambda: parse_basic_rules("or", raw), lambda: parse_enterprise_rules(raw)):
        try:
            parse()
        except RuleError as exc:
            assert exc.field.startswith("rules")
