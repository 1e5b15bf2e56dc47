"""Deployment-trigger conditions: which pushed tags fire a trigger and which updates are allowed."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.triggers.conditions import ConditionError, TagCondition, parse_condition, parse_version

OCI_TAGS = st.from_regex(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,20}", fullmatch=True)
ANY_TEXT = st.text(max_size=200)
VERSIONS = st.tuples(st.integers(0, 30), st.integers(0, 30), st.integers(0, 30))


@pytest.mark.parametrize(
    ("trigger_type", "condition", "normalised"),
    [
        ("all", ".*", ".*"),
        ("all", "", ".*"),
        ("all", "  ", ".*"),
        ("tag", " latest ; stable;;latest ", "latest;stable"),
        ("regular", "v1\\..*", "v1\\..*"),
        ("semver", " MAJOR ", "major"),
        ("semver", " >=1.2.0 <2.0.0 ", ">=1.2.0 <2.0.0"),
    ],
)
def test_conditions_are_normalised(trigger_type: str, condition: str, normalised: str) -> None:
    assert parse_condition(trigger_type, condition) == TagCondition(trigger_type, normalised)


@pytest.mark.parametrize(
    ("trigger_type", "condition", "field", "message"),
    [
        ("tags", "x", "trigger_type", "must be one of all, tag, regular, semver"),
        ("all", "v.*", "condition", "must be '.*'"),
        ("tag", " ; ", "condition", "at least one tag"),
        ("tag", "ok;not ok", "condition", "'not ok' is not a valid image tag"),
        ("tag", ".hidden", "condition", "not a valid image tag"),
        ("tag", "a" * 129, "condition", "not a valid image tag"),
        ("regular", "(", "condition", "invalid regular expression: missing )"),
        ("regular", "(?=lookahead)", "condition", "invalid regular expression"),
        ("regular", "(a)\\1", "condition", "invalid regular expression"),
        ("regular", "", "condition", "empty"),
        ("regular", "a" * 1025, "condition", "longer than 1024"),
        ("semver", "", "condition", "empty range"),
        ("semver", ">", "condition", "not followed by a version"),
        ("semver", ">*", "condition", "matches nothing"),
        ("semver", "1.x.3", "condition", "wildcard"),
        ("semver", "1.2-rc.1", "condition", "not a version"),
        ("semver", "01.2.3", "condition", "not a semantic version"),
        ("semver", "latest", "condition", "not a version"),
        ("semver", "1.0.0 ||", "condition", "empty range"),
        ("semver", "!=1.0.0", "condition", "not a version"),
    ],
)
def test_invalid_conditions_name_the_field(trigger_type: str, condition: str, field: str, message: str) -> None:
    with pytest.raises(ConditionError) as caught:
        parse_condition(trigger_type, condition)
    assert caught.value.field == field
    assert str(caught.value).startswith(f"{field}: ")
    assert message in str(caught.value)


def test_constructing_directly_validates_too() -> None:
    with pytest.raises(ConditionError):
        TagCondition("regular", "(")


@pytest.mark.parametrize(
    ("trigger_type", "condition", "tag", "expected"),
    [
        ("all", ".*", "anything", True),
        ("all", ".*", None, False),
        ("tag", "latest;stable", "stable", True),
        ("tag", "latest;stable", "latest-1", False),
        ("tag", "latest", None, False),
        ("regular", "v1\\..*", "v1.2", True),
        ("regular", "v1\\..*", "xv1.2", False),  # full match, not search
        ("regular", "v1", "v10", False),
        ("regular", ".*", None, False),
        ("semver", "major", "v2.0.0", True),
        ("semver", "major", "2.0.0-rc.1", False),
        ("semver", "patch", "latest", False),
        ("semver", "minor", "1.2", False),  # tags must be full versions
        ("semver", "minor", None, False),
    ],
)
def test_matches(trigger_type: str, condition: str, tag: str | None, expected: bool) -> None:
    assert parse_condition(trigger_type, condition).matches(tag) is expected


TAGS = ["0.0.3", "0.0.4", "0.2.3", "0.2.9", "0.3.0", "1.0.0", "1.2.0", "v1.2.3", "1.2.9", "1.3.0", "1.9.9"]
TAGS += ["2.0.0", "2.0.0-rc.1", "1.2.3-beta.1", "1.2.3-beta.2", "1.2", "latest", "V1.2.3+build.7"]


@pytest.mark.parametrize(
    ("condition", "selected"),
    [
        (">=1.2.0 <2.0.0", ["1.2.0", "v1.2.3", "1.2.9", "1.3.0", "1.9.9", "V1.2.3+build.7"]),
        (">=1.0.0, <2.0.0", ["1.0.0", "1.2.0", "v1.2.3", "1.2.9", "1.3.0", "1.9.9", "V1.2.3+build.7"]),
        (">= 1.2.0 , < 1.3", ["1.2.0", "v1.2.3", "1.2.9", "V1.2.3+build.7"]),
        ("^1.2", ["1.2.0", "v1.2.3", "1.2.9", "1.3.0", "1.9.9", "V1.2.3+build.7"]),
        ("^0.2.3", ["0.2.3", "0.2.9"]),
        ("^0.0.3", ["0.0.3"]),
        ("~1.2.3", ["v1.2.3", "1.2.9", "V1.2.3+build.7"]),
        ("~1", ["1.0.0", "1.2.0", "v1.2.3", "1.2.9", "1.3.0", "1.9.9", "V1.2.3+build.7"]),
        ("1.x", ["1.0.0", "1.2.0", "v1.2.3", "1.2.9", "1.3.0", "1.9.9", "V1.2.3+build.7"]),
        ("1.2.*", ["1.2.0", "v1.2.3", "1.2.9", "V1.2.3+build.7"]),
        (">1.2", ["1.3.0", "1.9.9", "2.0.0"]),
        ("<=0.2", ["0.0.3", "0.0.4", "0.2.3", "0.2.9"]),
        ("<0.2.9", ["0.0.3", "0.0.4", "0.2.3"]),
        ("=1.2.3", ["v1.2.3", "V1.2.3+build.7"]),
        ("v1.2.3", ["v1.2.3", "V1.2.3+build.7"]),
        ("0.0.3 || >=1.9.0", ["0.0.3", "1.9.9", "2.0.0"]),
        ("*", [tag for tag in TAGS if tag not in ("2.0.0-rc.1", "1.2.3-beta.1", "1.2.3-beta.2", "1.2", "latest")]),
        # Pre-releases only when the range names a pre-release of the same version.
        (">=1.2.3-beta.2 <1.3.0", ["v1.2.3", "1.2.9", "1.2.3-beta.2", "V1.2.3+build.7"]),
        ("^1.2.3-beta.1", ["v1.2.3", "1.2.9", "1.3.0", "1.9.9", "1.2.3-beta.1", "1.2.3-beta.2", "V1.2.3+build.7"]),
        (">=1.0.0", ["1.0.0", "1.2.0", "v1.2.3", "1.2.9", "1.3.0", "1.9.9", "2.0.0", "V1.2.3+build.7"]),
    ],
)
def test_semver_ranges(condition: str, selected: list[str]) -> None:
    parsed = parse_condition("semver", condition)
    assert sorted(tag for tag in TAGS if parsed.matches(tag)) == sorted(selected)


@pytest.mark.parametrize(
    ("condition", "current", "new", "expected"),
    [
        ("major", "1.2.3", "2.0.0", True),
        ("major", "1.2.3", "1.2.4", True),
        ("major", "1.2.3", "1.2.3", False),
        ("major", "1.2.3", "1.2.2", False),
        ("minor", "1.2.3", "1.3.0", True),
        ("minor", "v1.2.3", "v1.2.4", True),
        ("minor", "1.2.3", "2.0.0", False),
        ("patch", "1.2.3", "1.2.4", True),
        ("patch", "1.2.3", "1.3.0", False),
        ("patch", "1.2.3", "2.0.0", False),
        ("patch", "1.2.3", "1.2.4-rc.1", False),
        ("patch", "1.2.3", "latest", False),
        ("patch", "1.2.3-rc.1", "1.2.3", True),
        ("patch", None, "1.0.0", True),
        ("patch", "latest", "1.0.0", True),
        (">=1.0.0", "1.5.0", "1.1.0", True),  # ranges only ask whether the new tag matches
        (">=1.0.0", "1.5.0", "0.9.0", False),
    ],
)
def test_semver_accepts_update(condition: str, current: str | None, new: str, expected: bool) -> None:
    assert parse_condition("semver", condition).accepts_update(current, new) is expected


def test_other_types_accept_any_matching_update() -> None:
    condition = parse_condition("tag", "latest")
    assert condition.accepts_update("latest", "latest")
    assert not condition.accepts_update("latest", "stable")


def test_parse_version_allows_a_leading_v_only() -> None:
    assert str(parse_version("v1.2.3")) == "1.2.3"
    assert parse_version("x1.2.3") is None
    assert parse_version("") is None
    assert parse_version(None) is None


def test_pathological_regex_is_linear() -> None:
    condition = parse_condition("regular", "(a+)+$")
    started = time.monotonic()
    assert not condition.matches("a" * 5000 + "b")
    assert time.monotonic() - started < 1.0


@given(st.lists(OCI_TAGS, min_size=1, max_size=8), st.one_of(OCI_TAGS, ANY_TEXT))
def test_tag_condition_matches_exactly_the_listed_tags(tags: list[str], candidate: str) -> None:
    condition = parse_condition("tag", " ; ".join(tags))
    assert condition.matches(candidate) is (candidate in tags)
    for tag in tags:
        assert condition.matches(tag)


@given(st.sampled_from(["v1\\..*", "[a-z]+", "(a|b)*c", "(a+)+$", ".*-rc[0-9]*", "\\d+", "\\p{L}+"]), ANY_TEXT)
def test_regular_never_raises_at_match_time(pattern: str, tag: str) -> None:
    assert isinstance(parse_condition("regular", pattern).matches(tag), bool)


@given(ANY_TEXT)
def test_all_matches_every_tag(tag: str) -> None:
    assert parse_condition("all", "").matches(tag)


Triple = tuple[int, int, int]


def dotted(version: Triple) -> str:
    return ".".join(map(str, version))


@given(VERSIONS, VERSIONS, st.sampled_from(["major", "minor", "patch"]))
def test_semver_levels_only_accept_newer_versions(current: Triple, new: Triple, level: str) -> None:
    accepted = parse_condition("semver", level).accepts_update(dotted(current), "v" + dotted(new))
    same_prefix = {"major": 0, "minor": 1, "patch": 2}[level]
    assert accepted is (new > current and new[:same_prefix] == current[:same_prefix])


@given(VERSIONS, VERSIONS)
def test_caret_range_agrees_with_its_definition(base: Triple, candidate: Triple) -> None:
    condition = parse_condition("semver", "^" + dotted(base))
    level = next((index for index, number in enumerate(base) if number > 0), 2)
    expected = candidate >= base and candidate[: level + 1] == base[: level + 1]
    assert condition.matches(dotted(candidate)) is expected


@given(VERSIONS, VERSIONS, VERSIONS)
def test_comparator_sets_are_intersections(low: Triple, high: Triple, candidate: Triple) -> None:
    both = parse_condition("semver", f">={dotted(low)}, <{dotted(high)}").matches(dotted(candidate))
    assert both is (low <= candidate < high)
