"""IAM policies: parsing against the schema, evaluation, system policies, grants and dependencies."""

from __future__ import annotations

import fnmatch
import json
import re
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from workers.iam import grammar
from workers.iam.actions import route_action
from workers.iam.authorize import authorize, authorize_route, decide
from workers.iam.conditions import condition_holds
from workers.iam.grants import AuthLevel, Grant, grant_allows, required_level
from workers.iam.policy import (
    AccessRequest,
    Effect,
    Outcome,
    Policy,
    PolicyError,
    evaluate,
    evaluate_with_dependencies,
    parse_policy,
)
from workers.iam.system import (
    ADMIN,
    FULL_ACCESS,
    OPERATE_ACCESS,
    OPERATIONS,
    READ_ONLY_ACCESS,
    SYSTEM_POLICIES,
    TENANT_ADMINISTRATOR,
    system_policy,
)
from workers.iam.urn import Scope

SCHEMAS = Path(__file__).resolve().parent.parent / "schemas"
SCHEMA = SCHEMAS / "iam-policy.v1.schema.json"
EXAMPLES = sorted((SCHEMAS / "examples" / "iam-policy" / "1").glob("*.json"))
SCOPE = Scope("region-a", "acc1")
API = "swr:region-a:acc1:repo:team/api"
WEB = "swr:region-a:acc1:repo:team/web"
OTHER = "swr:region-a:acc1:repo:other/api"
NS = "swr:region-a:acc1:namespace:team"
ALLOW, DENY, IMPLICIT = Outcome.ALLOW, Outcome.EXPLICIT_DENY, Outcome.IMPLICIT_DENY


@cache
def _validator() -> Draft202012Validator:
    return Draft202012Validator(json.loads(SCHEMA.read_text(encoding="utf-8")))


def schema_accepts(document: object) -> bool:
    return _validator().is_valid(document)


def allow(action: Any, resource: Any = None, condition: Any = None) -> dict[str, Any]:
    return _statement("Allow", action, resource, condition)


def deny(action: Any, resource: Any = None, condition: Any = None) -> dict[str, Any]:
    return _statement("Deny", action, resource, condition)


def _statement(effect: str, action: Any, resource: Any, condition: Any) -> dict[str, Any]:
    statement: dict[str, Any] = {"Effect": effect, "Action": action}
    if resource is not None:
        statement["Resource"] = resource
    if condition is not None:
        statement["Condition"] = condition
    return statement


def document(*statements: dict[str, Any], version: str = "1.1") -> dict[str, Any]:
    return {"Version": version, "Statement": list(statements)}


def policy(*statements: dict[str, Any], name: str = "p") -> Policy:
    return parse_policy(document(*statements), name=name)


def outcome(
    statements: list[dict[str, Any]], action: str, resource: str, context: dict[str, str] | None = None
) -> Outcome:
    return evaluate(AccessRequest(action, resource, context or {}), [policy(*statements)]).outcome


# --- evaluation ----------------------------------------------------------------------------

EVALUATION_CASES = [
    # actions: wildcards and case
    ([allow("swr:repo:getRepo")], "swr:repo:getRepo", API, ALLOW),
    ([allow("swr:repo:getRepo")], "swr:repo:GETREPO", API, ALLOW),
    ([allow("SWR:REPO:GETREPO")], "swr:repo:getRepo", API, ALLOW),
    ([allow("swr:repo:getRepo")], "swr:repo:getRepoX", API, IMPLICIT),
    ([allow("swr:repo:*")], "swr:repo:deleteRepo", API, ALLOW),
    ([allow("swr:repo:*")], "swr:namespace:getNamespace", NS, IMPLICIT),
    ([allow("swr:*:get*")], "swr:namespace:getNamespace", NS, ALLOW),
    ([allow("swr:*:get*")], "swr::getDomainOverview", "*", ALLOW),
    ([allow("swr:*:get*")], "swr:repo:listRepoTags", API, IMPLICIT),
    ([allow("swr:*:*")], "swr::createLoginSecret", "*", ALLOW),
    ([allow("swr:*:*")], "obs:bucket:listBuckets", "*", IMPLICIT),
    ([allow("*")], "swr:repo:upload", API, ALLOW),
    ([allow("*:*:*")], "swr:repo:upload", API, ALLOW),
    ([allow("swr:repo:get????")], "swr:repo:getRepo", API, ALLOW),
    ([allow("swr:repo:get???")], "swr:repo:getRepo", API, IMPLICIT),
    ([allow("swr:repo:*Trigger")], "swr:repo:createTrigger", API, ALLOW),
    ([allow("swr:repo:*Trigger")], "swr:repo:listTriggers", API, IMPLICIT),
    ([allow("swr:repo:*Trigger*")], "swr:repo:listTriggers", API, ALLOW),
    ([allow(["swr:repo:upload", "swr:repo:download"])], "swr:repo:download", API, ALLOW),
    ([allow(["swr:repo:upload", "swr:repo:download"])], "swr:repo:deleteRepo", API, IMPLICIT),
    ([allow("swr::createLoginSecret")], "swr::createLoginSecret", "*", ALLOW),
    ([allow("swr::createLoginSecret")], "swr:repo:createLoginSecret", "*", IMPLICIT),
    ([allow("obs:*:*")], "swr:repo:getRepo", API, IMPLICIT),
    # resources: absent means "*", wildcards, case-sensitive paths
    ([allow("swr:repo:getRepo")], "swr:repo:getRepo", OTHER, ALLOW),
    ([allow("swr:repo:getRepo", "*")], "swr:repo:getRepo", OTHER, ALLOW),
    ([allow("swr:repo:getRepo", "swr:*:*:repo:team/*")], "swr:repo:getRepo", API, ALLOW),
    ([allow("swr:repo:getRepo", "swr:*:*:repo:team/*")], "swr:repo:getRepo", OTHER, IMPLICIT),
    ([allow("swr:repo:getRepo", "swr:*:*:repo:team/*")], "swr:repo:getRepo", API + "/nested", ALLOW),
    ([allow("swr:repo:getRepo", "swr:*:*:repo:team*")], "swr:repo:getRepo", "swr:region-a:acc1:repo:team2/x", ALLOW),
    ([allow("swr:repo:getRepo", "swr:*:*:repo:team/a??")], "swr:repo:getRepo", API, ALLOW),
    ([allow("swr:repo:getRepo", "swr:*:*:repo:team/a?")], "swr:repo:getRepo", API, IMPLICIT),
    ([allow("swr:repo:getRepo", "swr:*:*:repo:Team/*")], "swr:repo:getRepo", API, IMPLICIT),
    ([allow("swr:repo:getRepo", "SWR:*:*:repo:team/*")], "swr:repo:getRepo", API, ALLOW),
    ([allow("swr:repo:getRepo", "swr:*:*:REPO:team/*")], "swr:repo:getRepo", API, IMPLICIT),
    ([allow("swr:repo:getRepo", "swr:region-b:*:repo:*")], "swr:repo:getRepo", API, IMPLICIT),
    ([allow("swr:repo:getRepo", "swr:region-a:*:repo:*")], "swr:repo:getRepo", API, ALLOW),
    ([allow("swr:repo:getRepo", "swr:*:acc2:repo:*")], "swr:repo:getRepo", API, IMPLICIT),
    ([allow("swr:repo:getRepo", "swr:region-?:acc1:repo:*")], "swr:repo:getRepo", API, ALLOW),
    ([allow("swr:*:*", "swr:*:*:namespace:team")], "swr:namespace:getNamespace", NS, ALLOW),
    ([allow("swr:*:*", "swr:*:*:namespace:team")], "swr:repo:getRepo", API, IMPLICIT),
    ([allow("swr:*:*", "swr:*:*:namespace:team")], "swr:namespace:getNamespace", NS + "2", IMPLICIT),
    ([allow("swr:*:*", "swr:*:*:*:*")], "swr:namespace:getNamespace", NS, ALLOW),
    ([allow("swr:*:*", "swr:*:*:repo:*")], "swr::createLoginSecret", "*", IMPLICIT),
    ([allow("swr:*:*", "*")], "swr::createLoginSecret", "*", ALLOW),
    ([allow("swr:*:*", ["swr:*:*:repo:x/*", "swr:*:*:repo:team/api"])], "swr:repo:getRepo", API, ALLOW),
    ([allow("swr:*:*", ["swr:*:*:repo:x/*", "swr:*:*:repo:team/api"])], "swr:repo:getRepo", WEB, IMPLICIT),
    (
        [allow("swr:repo:listRepos", "swr:*:*:repo:team/*")],
        "swr:repo:listRepos",
        "swr:region-a:acc1:repo:team/*",
        ALLOW,
    ),
    (
        [allow("swr:repo:listRepos", "swr:*:*:repo:team/api")],
        "swr:repo:listRepos",
        "swr:region-a:acc1:repo:team/*",
        IMPLICIT,
    ),
    ([allow("swr:repo:listRepos", "swr:*:*:repo:team/*")], "swr:repo:listRepos", "swr:region-a:acc1:repo:*", IMPLICIT),
    (
        [allow("swr:*:*", ["swr:*:*:repository:local/team", "swr:*:*:repository:local/team/*"])],
        "swr:repository:createWebhookPolicy",
        "swr:region-a:acc1:repository:local/team",
        ALLOW,
    ),
    (
        [allow("swr:*:*", "swr:*:*:repository:local/team/*")],
        "swr:repository:createWebhookPolicy",
        "swr:region-a:acc1:repository:local/team",
        IMPLICIT,
    ),
    # deny wins; order never matters
    ([allow("*"), deny("swr:repo:deleteRepo")], "swr:repo:deleteRepo", API, DENY),
    ([allow("*"), deny("swr:repo:deleteRepo")], "swr:repo:getRepo", API, ALLOW),
    ([deny("swr:repo:deleteRepo"), allow("*")], "swr:repo:deleteRepo", API, DENY),
    ([allow("*"), deny("swr:repo:DELETEREPO")], "swr:repo:deleteRepo", API, DENY),
    ([allow("*"), deny("swr:*:delete*")], "swr:repo:deleteTrigger", API, DENY),
    ([allow("*"), deny("swr:*:delete*")], "swr:repo:createTrigger", API, ALLOW),
    ([allow("*"), deny("swr:*:delete*")], "swr:namespace:deleteNamespace", NS, DENY),
    ([allow("*"), deny("*", "swr:*:*:repo:team/api")], "swr:repo:getRepo", API, DENY),
    ([allow("*"), deny("*", "swr:*:*:repo:team/api")], "swr:repo:getRepo", WEB, ALLOW),
    ([deny("swr:repo:deleteRepo")], "swr:repo:deleteRepo", API, DENY),
    ([deny("swr:repo:deleteRepo")], "swr:repo:getRepo", API, IMPLICIT),
    (
        [allow("swr:repo:*", "swr:*:*:repo:team/*"), deny("swr:repo:upload", "swr:*:*:repo:team/api")],
        "swr:repo:upload",
        WEB,
        ALLOW,
    ),
    (
        [allow("swr:repo:*", "swr:*:*:repo:team/*"), deny("swr:repo:upload", "swr:*:*:repo:team/api")],
        "swr:repo:upload",
        API,
        DENY,
    ),
    (
        [allow("swr:repo:*", "swr:*:*:repo:team/*"), allow("swr:repo:*", "swr:*:*:repo:other/*")],
        "swr:repo:upload",
        OTHER,
        ALLOW,
    ),
]

CONDITIONAL_CASES = [
    ([allow("*", None, {"StringEquals": {"g:UserName": "alice"}})], {"g:UserName": "alice"}, ALLOW),
    ([allow("*", None, {"StringEquals": {"g:UserName": "alice"}})], {"g:UserName": "bob"}, IMPLICIT),
    ([allow("*", None, {"StringEquals": {"g:UserName": "alice"}})], {}, IMPLICIT),
    ([allow("*"), deny("*", None, {"StringEquals": {"g:UserName": "bob"}})], {"g:UserName": "bob"}, DENY),
    ([allow("*"), deny("*", None, {"StringEquals": {"g:UserName": "bob"}})], {"g:UserName": "alice"}, ALLOW),
    ([allow("*"), deny("*", None, {"StringEquals": {"g:UserName": "bob"}})], {}, ALLOW),
    ([allow("*"), deny("*", None, {"StringNotEquals": {"g:UserName": "bob"}})], {}, DENY),
    ([allow("*"), deny("*", None, {"NotIpAddress": {"g:SourceIp": "10.0.0.0/8"}})], {"g:SourceIp": "10.9.9.9"}, ALLOW),
    ([allow("*"), deny("*", None, {"NotIpAddress": {"g:SourceIp": "10.0.0.0/8"}})], {"g:SourceIp": "8.8.8.8"}, DENY),
    ([allow("*"), deny("*", None, {"NotIpAddress": {"g:SourceIp": "10.0.0.0/8"}})], {}, DENY),
    ([allow("*"), deny("*", None, {"NotIpAddressIfExists": {"g:SourceIp": "10.0.0.0/8"}})], {}, DENY),
    ([allow("*"), deny("*", None, {"IpAddressIfExists": {"g:SourceIp": "8.8.8.0/24"}})], {}, DENY),
    ([allow("*"), deny("*", None, {"IpAddress": {"g:SourceIp": "8.8.8.0/24"}})], {}, ALLOW),
    (
        [
            allow(
                "*",
                None,
                {"DateGreaterThan": {"g:CurrentTime": "2026-01-01"}, "DateLessThan": {"g:CurrentTime": "2026-02-01"}},
            )
        ],
        {"g:CurrentTime": "2026-01-15T12:00:00Z"},
        ALLOW,
    ),
    (
        [
            allow(
                "*",
                None,
                {"DateGreaterThan": {"g:CurrentTime": "2026-01-01"}, "DateLessThan": {"g:CurrentTime": "2026-02-01"}},
            )
        ],
        {"g:CurrentTime": "2026-02-15T12:00:00Z"},
        IMPLICIT,
    ),
    ([allow("*", None, {"Bool": {"g:MFAPresent": True}})], {"G:MFAPRESENT": "TRUE"}, ALLOW),
    ([allow("*", None, {"StringLike": {"g:UserName": "ci-*"}})], {"g:UserName": "ci-runner-1"}, ALLOW),
]


@pytest.mark.parametrize(("statements", "action", "resource", "expected"), EVALUATION_CASES)
def test_evaluate(statements: list[dict[str, Any]], action: str, resource: str, expected: Outcome) -> None:
    assert outcome(statements, action, resource) is expected
    assert outcome(list(reversed(statements)), action, resource) is expected


@pytest.mark.parametrize(("statements", "context", "expected"), CONDITIONAL_CASES)
def test_evaluate_with_conditions(statements: list[dict[str, Any]], context: dict[str, str], expected: Outcome) -> None:
    assert outcome(statements, "swr:repo:upload", API, context) is expected


def test_no_policies_deny_by_default() -> None:
    decision = evaluate(AccessRequest("swr:repo:getRepo", API), [])
    assert decision.outcome is IMPLICIT and not decision.allowed
    assert decision.explain() == f"swr:repo:getRepo on {API} is not allowed by any policy or grant"


def test_decision_names_the_first_deciding_statement_whatever_the_order() -> None:
    a = policy(allow("*"), {"Sid": "no deletes", "Effect": "Deny", "Action": "swr:*:delete*"}, name="a")
    b = policy(deny("swr:repo:deleteRepo"), name="b")
    for policies in ([a, b], [b, a]):
        decision = evaluate(AccessRequest("swr:repo:deleteRepo", API), policies)
        assert (decision.statement and (decision.statement.policy, decision.statement.index)) == ("a", 1)
        assert decision.explain() == f"swr:repo:deleteRepo on {API} is denied by statement 1 (no deletes) of policy 'a'"
    allowed = evaluate(AccessRequest("swr:repo:getRepo", API), [b, a])
    assert allowed.explain() == f"swr:repo:getRepo on {API} is allowed by statement 0 of policy 'a'"


def test_role_documents_with_depends_are_policies() -> None:
    role = parse_policy(
        {
            "Version": "1.0",
            "Statement": [{"Action": ["swr:*:*"], "Effect": "Allow"}],
            "Depends": [{"catalog": "BASE", "display_name": "Tenant Guest"}],
        },
        name="role",
    )
    assert role.depends == (("BASE", "Tenant Guest"),)
    assert evaluate(AccessRequest("swr:repo:upload", API), [role]).allowed


# --- system policies (the seeds' table of common operations) --------------------------------

SEED_TABLE = {
    FULL_ACCESS: set(OPERATIONS),
    OPERATE_ACCESS: set(OPERATIONS),
    READ_ONLY_ACCESS: {"pull an image"},
    ADMIN: set(OPERATIONS),
    TENANT_ADMINISTRATOR: set(OPERATIONS),
}


@pytest.mark.parametrize("operation", sorted(OPERATIONS))
@pytest.mark.parametrize("name", sorted(SEED_TABLE))
def test_system_policy_follows_the_seed_table(name: str, operation: str) -> None:
    resources = {"swr:repo": API, "swr:namespace": NS, "swr::": "*"}
    decisions = [
        evaluate(
            AccessRequest(action, next(r for p, r in resources.items() if action.startswith(p))), [system_policy(name)]
        )
        for action in OPERATIONS[operation]
    ]
    assert all(d.allowed for d in decisions) is (operation in SEED_TABLE[name])


@pytest.mark.parametrize(
    ("name", "action", "expected"),
    [
        (READ_ONLY_ACCESS, "swr:repo:listRepoTags", True),
        (READ_ONLY_ACCESS, "swr:repo:getTrigger", True),
        (READ_ONLY_ACCESS, "swr:repo:listRetentionHistories", True),
        (READ_ONLY_ACCESS, "swr::listQuotas", True),
        (READ_ONLY_ACCESS, "swr:repository:listWebhookJobs", True),
        (READ_ONLY_ACCESS, "swr:instance:getReplicationPolicy", True),
        (READ_ONLY_ACCESS, "swr:repo:createTrigger", False),
        (READ_ONLY_ACCESS, "swr:repo:updateTrigger", False),
        (READ_ONLY_ACCESS, "swr:repository:createWebhookPolicy", False),
        (OPERATE_ACCESS, "swr:instance:createReplicationPolicy", True),
        (OPERATE_ACCESS, "swr:repository:deleteWebhookPolicy", True),
        (OPERATE_ACCESS, "swr:instance:delete", False),
        (OPERATE_ACCESS, "swr:instance:create", False),
        (FULL_ACCESS, "swr:instance:delete", True),
        (ADMIN, "swr:instance:delete", True),
        (FULL_ACCESS, "obs:bucket:listBuckets", False),
        (TENANT_ADMINISTRATOR, "obs:bucket:listBuckets", True),
    ],
)
def test_system_policy_beyond_the_seed_table(name: str, action: str, expected: bool) -> None:
    assert evaluate(AccessRequest(action, "*"), [SYSTEM_POLICIES[name]]).allowed is expected


def test_tenant_administrator_excludes_iam() -> None:
    tenant = [system_policy(TENANT_ADMINISTRATOR)]
    assert not evaluate(AccessRequest("iam:users:createUser", "*", {"g:ServiceName": "IAM"}), tenant).allowed
    assert evaluate(AccessRequest("swr:repo:upload", API, {"g:ServiceName": "swr"}), tenant).allowed


def test_a_deny_policy_narrows_full_access() -> None:
    no_delete = policy(deny("swr:repo:deleteRepo"), name="no-delete")
    policies = [system_policy(FULL_ACCESS), no_delete]
    assert evaluate(AccessRequest("swr:repo:deleteRepo", API), policies).outcome is DENY
    assert evaluate(AccessRequest("swr:repo:deleteRepoTag", API), policies).allowed


# --- examples: the schema and the parser agree -----------------------------------------------


def test_there_are_examples() -> None:
    assert len(EXAMPLES) >= 4


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.name for p in EXAMPLES])
def test_example_follows_the_schema_and_parses(path: Path) -> None:
    example = json.loads(path.read_text(encoding="utf-8"))
    assert list(_validator().iter_errors(example)) == []
    assert parse_policy(example, name=path.stem).statements


@pytest.mark.parametrize("name", sorted(SYSTEM_POLICIES))
def test_system_documents_follow_the_schema(name: str) -> None:
    from workers.iam.system import _DOCUMENTS

    assert schema_accepts(_DOCUMENTS[name])


def _example(stem: str) -> Policy:
    path = SCHEMAS / "examples" / "iam-policy" / "1" / f"{stem}.json"
    return parse_policy(json.loads(path.read_text(encoding="utf-8")), name=stem)


@pytest.mark.parametrize(
    ("stem", "action", "resource", "context", "expected"),
    [
        ("read-only-team", "swr:repo:download", "swr:region-a:acc1:repo:team-a/api", {}, ALLOW),
        ("read-only-team", "swr:repo:listTriggers", "swr:region-a:acc1:repo:team-a/api", {}, ALLOW),
        ("read-only-team", "swr:namespace:getNamespace", "swr:region-a:acc1:namespace:team-a", {}, ALLOW),
        ("read-only-team", "swr:repo:upload", "swr:region-a:acc1:repo:team-a/api", {}, IMPLICIT),
        ("read-only-team", "swr:repo:download", "swr:region-a:acc1:repo:team-b/api", {}, IMPLICIT),
        ("read-only-team", "swr::createLoginSecret", "*", {}, ALLOW),
        ("team-triggers-never-delete", "swr:repo:createTrigger", "swr:region-a:acc1:repo:team-b/api", {}, ALLOW),
        ("team-triggers-never-delete", "swr:repo:updateTrigger", "swr:region-a:acc1:repo:team-b/api", {}, ALLOW),
        ("team-triggers-never-delete", "swr:repo:deleteTrigger", "swr:region-a:acc1:repo:team-b/api", {}, DENY),
        ("team-triggers-never-delete", "swr:repo:deleteRepo", "swr:region-a:acc1:repo:team-b/api", {}, DENY),
        ("team-triggers-never-delete", "swr:repo:createTrigger", "swr:region-a:acc1:repo:team-c/api", {}, IMPLICIT),
        ("deny-delete-trigger-one-repo", "swr:repo:deleteTrigger", "swr:region-a:acc1:repo:prod/payments", {}, DENY),
        ("deny-delete-trigger-one-repo", "swr:repo:deleteTrigger", "swr:region-a:acc1:repo:prod/orders", {}, IMPLICIT),
        (
            "source-ip-condition",
            "swr:repo:upload",
            "swr:region-a:acc1:repo:ci/app",
            {"g:SourceIp": "10.20.1.2"},
            IMPLICIT,
        ),
        (
            "source-ip-condition",
            "swr:repo:upload",
            "swr:region-a:acc1:repo:ci/app",
            {"g:SourceIp": "10.20.1.2", "g:CurrentTime": "2026-11-22T10:00:00Z"},
            ALLOW,
        ),
        (
            "source-ip-condition",
            "swr:repo:upload",
            "swr:region-a:acc1:repo:ci/app",
            {"g:SourceIp": "2001:db8:20::9", "g:CurrentTime": "2026-11-22T10:00:00+08:00"},
            ALLOW,
        ),
        (
            "source-ip-condition",
            "swr:repo:upload",
            "swr:region-a:acc1:repo:ci/app",
            {"g:SourceIp": "10.21.1.2", "g:CurrentTime": "2026-11-22T10:00:00Z"},
            DENY,
        ),
        (
            "source-ip-condition",
            "swr:repo:upload",
            "swr:region-a:acc1:repo:ci/app",
            {"g:SourceIp": "10.20.1.2", "g:CurrentTime": "2027-01-01T00:00:00Z"},
            IMPLICIT,
        ),
        ("source-ip-condition", "swr::createLoginSecret", "*", {"g:SourceIp": "192.0.2.7"}, ALLOW),
        ("source-ip-condition", "swr::createLoginSecret", "*", {"g:SourceIp": "192.0.2.8"}, DENY),
    ],
)
def test_examples_mean_what_they_say(
    stem: str, action: str, resource: str, context: dict[str, str], expected: Outcome
) -> None:
    assert evaluate(AccessRequest(action, resource, context), [_example(stem)]).outcome is expected


GOOD = allow("swr:repo:getRepo")

BAD_DOCUMENTS = [
    ([], "<root>"),
    ("policy", "<root>"),
    ({}, "Version"),
    ({"Version": "1.1"}, "Statement"),
    ({"Statement": [GOOD]}, "Version"),
    ({"Version": "2.0", "Statement": [GOOD]}, "Version"),
    ({"Version": "1", "Statement": [GOOD]}, "Version"),
    ({"Version": 1.1, "Statement": [GOOD]}, "Version"),
    ({"Version": "1.1", "Statement": []}, "Statement"),
    ({"Version": "1.1", "Statement": GOOD}, "Statement"),
    ({"Version": "1.1", "Statement": [GOOD], "Id": "x"}, "Id"),
    ({"version": "1.1", "Statement": [GOOD]}, "version"),
    (document("x"), "Statement[0]"),  # type: ignore[arg-type]
    (document(GOOD, {"Action": "swr:repo:getRepo"}), "Statement[1].Effect"),
    (document({"Effect": "allow", "Action": "swr:repo:getRepo"}), "Statement[0].Effect"),
    (document({"Effect": True, "Action": "swr:repo:getRepo"}), "Statement[0].Effect"),
    (document({"Effect": "Allow"}), "Statement[0].Action"),
    (document(allow([])), "Statement[0].Action"),
    (document(allow("")), "Statement[0].Action"),
    (document(allow(5)), "Statement[0].Action"),
    (document(allow("swr:repo")), "Statement[0].Action"),
    (document(allow("swr:repo:get:Repo")), "Statement[0].Action"),
    (document(allow("swr:re po:getRepo")), "Statement[0].Action"),
    (document(allow("swr:repo:get-repo")), "Statement[0].Action"),
    (document(allow(["swr:repo:getRepo", "getRepo"])), "Statement[0].Action[1]"),
    (document(allow(["swr:repo:getRepo", None])), "Statement[0].Action[1]"),
    (document(allow("swr:repo:getRepo\n")), "Statement[0].Action"),
    (document(allow("swr:repo:" + "a" * 1020)), "Statement[0].Action"),
    (document(allow("*", "")), "Statement[0].Resource"),
    (document(allow("*", [])), "Statement[0].Resource"),
    (document(allow("*", "swr:repo")), "Statement[0].Resource"),
    (document(allow("*", "swr:*:*:repo")), "Statement[0].Resource"),
    (document(allow("*", "swr:*:*::team/*")), "Statement[0].Resource"),
    (document(allow("*", ["*", "swr:*:*:repo:a b"])), "Statement[0].Resource[1]"),
    (document(allow("*", {"urn": "*"})), "Statement[0].Resource"),
    (document(allow("*", "swr:*:*:repo:team/*\t")), "Statement[0].Resource"),
    (document(allow("*", None, [])), "Statement[0].Condition"),
    (document(GOOD, GOOD, allow("*", None, {"StringLike": {}})), "Statement[2].Condition.StringLike"),
    (document(allow("*", None, {"StringLike": {"g:UserName": []}})), "Statement[0].Condition.StringLike.g:UserName"),
    (
        document(allow("*", None, {"IpAddress": {"g:SourceIp": "10.0.0.256"}})),
        "Statement[0].Condition.IpAddress.g:SourceIp",
    ),
    (document({**GOOD, "Sid": 5}), "Statement[0].Sid"),
    (document({**GOOD, "Sid": "a\u0007b"}), "Statement[0].Sid"),
    (document({**GOOD, "Principal": "*"}), "Statement[0].Principal"),
    (document({**GOOD, "NotAction": "swr:repo:upload"}), "Statement[0].NotAction"),
    ({**document(GOOD), "Depends": "Tenant Guest"}, "Depends"),
    ({**document(GOOD), "Depends": ["Tenant Guest"]}, "Depends[0]"),
    ({**document(GOOD), "Depends": [{"catalog": "BASE"}]}, "Depends[0].display_name"),
    ({**document(GOOD), "Depends": [{"catalog": "BASE", "display_name": "x", "y": 1}]}, "Depends[0].y"),
    ({**document(GOOD), "Depends": [{"catalog": 1, "display_name": "x"}]}, "Depends[0].catalog"),
]


@pytest.mark.parametrize(("bad", "field"), BAD_DOCUMENTS)
def test_bad_document_names_the_field_and_the_schema_rejects_it(bad: object, field: str) -> None:
    with pytest.raises(PolicyError) as raised:
        parse_policy(bad)
    assert raised.value.field == field
    assert str(raised.value).startswith(f"{field}: ")
    assert not schema_accepts(bad)


def test_the_schema_uses_the_parsers_patterns() -> None:
    text = SCHEMA.read_text(encoding="utf-8")
    schema = json.loads(text)
    defs = schema["$defs"]
    assert defs["text"]["not"]["pattern"] == grammar.CONTROL_CHARACTER
    assert defs["text"]["maxLength"] == grammar.MAX_STRING
    assert defs["action"]["pattern"] == grammar.ACTION
    assert defs["resource"]["pattern"] == grammar.RESOURCE
    assert defs["conditionKey"]["pattern"] == grammar.CONDITION_KEY
    assert defs["ipValue"]["pattern"] == grammar.IP_VALUE
    assert defs["dateValue"]["pattern"] == grammar.DATE_VALUE
    assert set(defs["condition"]["patternProperties"]) == {
        grammar.STRING_OPERATORS,
        grammar.DATE_OPERATORS,
        grammar.IP_OPERATORS,
        grammar.BOOL_OPERATORS,
        grammar.NULL_OPERATORS,
    }
    assert schema["properties"]["Version"]["enum"] == list(grammar.VERSIONS)
    for pattern in grammar.PATTERNS.values():
        re.compile(pattern)


# Documents assembled from valid and invalid pieces: the schema and the parser must agree on all.
PIECE_ACTIONS = st.sampled_from(["swr:repo:getRepo", "swr:*:get*", "*", "swr::x", "swr:repo", "", "a b:c:d", 3])
PIECE_RESOURCES = st.sampled_from(["*", "swr:*:*:repo:team/*", "SWR:r:a:namespace:n", "swr:*:*:repo", "x", " ", None])
PIECE_VALUES = st.sampled_from(
    [
        "alice",
        "",
        "10.0.0.0/8",
        "2001:db8::/32",
        "10.0.0.256",
        "2026-01-01",
        "2026-02-30",
        "true",
        True,
        1,
        None,
        "a\nb",
    ]
)
PIECE_OPERATORS = st.sampled_from(
    [
        "StringEquals",
        "StringLikeIfExists",
        "IpAddress",
        "NotIpAddressIfExists",
        "DateLessThan",
        "Bool",
        "Null",
        "NullIfExists",
        "Foo",
    ]
)
PIECE_KEYS = st.sampled_from(["g:UserName", "g:SourceIp", "swr:TargetRegion", "bad key", "g:"])
PIECE_CONDITIONS = st.dictionaries(
    PIECE_OPERATORS,
    st.dictionaries(PIECE_KEYS, PIECE_VALUES | st.lists(PIECE_VALUES, max_size=2), max_size=2),
    max_size=2,
)


@st.composite
def statements(draw: st.DrawFn) -> dict[str, Any]:
    statement: dict[str, Any] = {}
    if draw(st.booleans()) or draw(st.booleans()):
        statement["Effect"] = draw(st.sampled_from(["Allow", "Deny", "allow"]))
    if draw(st.booleans()) or draw(st.booleans()):
        statement["Action"] = draw(PIECE_ACTIONS | st.lists(PIECE_ACTIONS, max_size=2))
    if draw(st.booleans()):
        statement["Resource"] = draw(PIECE_RESOURCES | st.lists(PIECE_RESOURCES, max_size=2))
    if draw(st.booleans()):
        statement["Condition"] = draw(PIECE_CONDITIONS)
    if not draw(st.integers(0, 9)):
        statement[draw(st.sampled_from(["Sid", "NotAction"]))] = "x"
    return statement


@settings(max_examples=400)
@given(st.sampled_from(["1.1", "1.0", "2.0", 1.1]), st.lists(statements(), max_size=3))
def test_the_parser_accepts_exactly_what_the_schema_accepts(version: object, items: list[dict[str, Any]]) -> None:
    candidate = {"Version": version, "Statement": items}
    try:
        parse_policy(candidate)
        parsed = True
    except PolicyError:
        parsed = False
    assert parsed is schema_accepts(candidate)


# --- properties of evaluation -----------------------------------------------------------------

REQUEST_ACTIONS = ["swr:repo:getRepo", "swr:repo:upload", "swr:repo:deleteTrigger", "swr:namespace:getNamespace"]
REQUEST_RESOURCES = [API, WEB, OTHER, NS, "*"]
ACTION_PATTERNS = st.sampled_from(
    [*REQUEST_ACTIONS, "swr:repo:*", "swr:*:get*", "*", "SWR:REPO:UPLOAD", "swr:*:delete*"]
)
RESOURCE_PATTERNS = st.sampled_from(
    [
        "*",
        "swr:*:*:repo:team/*",
        "swr:*:*:repo:team/api",
        "swr:region-a:*:*:*",
        "swr:*:*:namespace:team",
        "swr:*:*:repo:*",
    ]
)
CONDITIONS = st.sampled_from(
    [
        None,
        {"StringEquals": {"g:UserName": "alice"}},
        {"StringNotEquals": {"g:UserName": "alice"}},
        {"IpAddress": {"g:SourceIp": "10.0.0.0/8"}},
        {"NotIpAddressIfExists": {"g:SourceIp": "10.0.0.0/8"}},
    ]
)
CONTEXTS = st.sampled_from(
    [{}, {"g:UserName": "alice"}, {"g:SourceIp": "10.1.1.1"}, {"g:UserName": "bob", "g:SourceIp": "8.8.8.8"}]
)


@st.composite
def statement_documents(draw: st.DrawFn, effect: str | None = None) -> dict[str, Any]:
    return _statement(
        effect or draw(st.sampled_from(["Allow", "Deny"])),
        draw(ACTION_PATTERNS | st.lists(ACTION_PATTERNS, min_size=1, max_size=3)),
        draw(st.none() | RESOURCE_PATTERNS),
        draw(CONDITIONS),
    )


POLICY_SETS = st.lists(st.lists(statement_documents(), min_size=1, max_size=5), max_size=4)
REQUESTS = st.builds(AccessRequest, st.sampled_from(REQUEST_ACTIONS), st.sampled_from(REQUEST_RESOURCES), CONTEXTS)


def _policies(sets: list[list[dict[str, Any]]]) -> list[Policy]:
    return [policy(*items, name=f"p{index}") for index, items in enumerate(sets)]


@given(POLICY_SETS, REQUESTS, st.randoms())
def test_shuffling_statements_or_policies_never_changes_the_decision(
    sets: list[list[dict[str, Any]]], request: AccessRequest, random: Any
) -> None:
    before = evaluate(request, _policies(sets))
    shuffled = [random.sample(items, len(items)) for items in sets]
    policies = _policies(shuffled)
    random.shuffle(policies)
    after = evaluate(request, policies)
    assert after.outcome is before.outcome


@given(POLICY_SETS, REQUESTS)
def test_a_matching_deny_always_wins(sets: list[list[dict[str, Any]]], request: AccessRequest) -> None:
    blocker = policy(deny(request.action, request.resource), name="blocker")
    assert evaluate(request, [*_policies(sets), blocker]).outcome is DENY


@given(POLICY_SETS, REQUESTS, st.lists(statement_documents("Allow"), min_size=1, max_size=3))
def test_adding_an_allow_never_denies_what_was_allowed(
    sets: list[list[dict[str, Any]]], request: AccessRequest, extra: list[dict[str, Any]]
) -> None:
    if evaluate(request, _policies(sets)).allowed:
        assert evaluate(request, [*_policies(sets), policy(*extra, name="extra")]).allowed


@given(POLICY_SETS, REQUESTS, st.lists(statement_documents("Deny"), min_size=1, max_size=3))
def test_adding_a_deny_never_allows_what_was_denied(
    sets: list[list[dict[str, Any]]], request: AccessRequest, extra: list[dict[str, Any]]
) -> None:
    if not evaluate(request, _policies(sets)).allowed:
        assert not evaluate(request, [*_policies(sets), policy(*extra, name="extra")]).allowed


GRANTS = st.lists(
    st.builds(
        Grant,
        st.sampled_from(["region-a", "region-b"]),
        st.just("acc1"),
        st.sampled_from(["team", "other"]),
        st.sampled_from([None, "api", "web"]),
        st.sampled_from(list(AuthLevel)),
    ),
    max_size=3,
)


@given(POLICY_SETS, REQUESTS, GRANTS)
def test_grants_never_override_a_deny_and_never_take_an_allow_away(
    sets: list[list[dict[str, Any]]], request: AccessRequest, grants: list[Grant]
) -> None:
    policies = _policies(sets)
    alone = evaluate(request, policies)
    combined = decide(request, policies, grants)
    if alone.outcome is DENY:
        assert combined.outcome is DENY
    if alone.allowed:
        assert combined.allowed


# --- grants ---------------------------------------------------------------------------------


def g(level: AuthLevel, namespace: str = "team", repository: str | None = None, region: str = "region-a") -> Grant:
    return Grant(region, "acc1", namespace, repository, level)


READ, EDIT, MANAGE = AuthLevel.READ, AuthLevel.EDIT, AuthLevel.MANAGE
ALL_REPOS = "swr:region-a:acc1:repo:*"
TEAM_REPOS = "swr:region-a:acc1:repo:team/*"

GRANT_CASES = [
    ([g(READ)], "swr:repo:download", API, True),
    ([g(READ)], "swr:repo:getRepo", API, True),
    ([g(READ)], "swr:repo:listTriggers", API, True),
    ([g(READ)], "swr:repo:getRepoAccess", API, True),
    ([g(READ)], "swr:repo:upload", API, False),
    ([g(READ)], "swr:repo:createTrigger", API, False),
    ([g(READ)], "swr:namespace:getNamespace", NS, True),
    ([g(EDIT)], "swr:repo:upload", API, True),
    ([g(EDIT)], "swr:repo:createTrigger", API, True),
    ([g(EDIT)], "swr:repo:updateTrigger", API, True),
    ([g(EDIT)], "swr:repo:updateRepo", API, True),
    ([g(EDIT)], "swr:repo:createRetention", API, True),
    ([g(EDIT)], "swr:repo:createAutoSyncRepoJob", API, True),
    ([g(EDIT)], "swr:repo:createRepo", "swr:region-a:acc1:repo:team/new", True),
    ([g(EDIT)], "swr:namespace:multipartUpload", NS, True),
    ([g(EDIT)], "swr:repo:deleteTrigger", API, False),
    ([g(EDIT)], "swr:repo:deleteRepoTag", API, False),
    ([g(EDIT)], "swr:repo:createRepoAccess", API, False),
    ([g(EDIT)], "swr:repo:createRepoShare", API, False),
    ([g(MANAGE)], "swr:repo:deleteTrigger", API, True),
    ([g(MANAGE)], "swr:repo:deleteRepo", API, True),
    ([g(MANAGE)], "swr:repo:createRepoAccess", API, True),
    ([g(MANAGE)], "swr:repo:createRepoShare", API, True),
    ([g(MANAGE)], "swr:namespace:deleteNamespace", NS, True),
    ([g(MANAGE)], "swr:namespace:updateNamespaceAccess", NS, True),
    ([g(MANAGE)], "swr:namespace:createNamespace", NS, False),
    ([g(MANAGE)], "swr::createLoginSecret", "*", False),
    ([g(MANAGE)], "swr:repository:createWebhookPolicy", "swr:region-a:acc1:repository:local/team", False),
    ([g(MANAGE)], "swr:repo:doesNotExist", API, False),
    ([g(MANAGE, "other")], "swr:repo:getRepo", API, False),
    ([g(MANAGE, region="region-b")], "swr:repo:getRepo", API, False),
    ([Grant("region-a", "acc2", "team", None, MANAGE)], "swr:repo:getRepo", API, False),
    ([g(EDIT, repository="api")], "swr:repo:upload", API, True),
    ([g(EDIT, repository="api")], "swr:repo:upload", WEB, False),
    ([g(MANAGE, repository="api")], "swr:namespace:getNamespace", NS, False),
    ([g(READ, repository="a/b")], "swr:repo:download", "swr:region-a:acc1:repo:team/a/b", True),
    ([g(READ)], "swr:repo:download", "swr:region-a:acc1:repo:team/a/b", True),
    ([g(READ, repository="api"), g(EDIT)], "swr:repo:upload", API, True),
    ([g(READ, repository="api"), g(EDIT, "other")], "swr:repo:upload", API, False),
    ([g(READ)], "swr:repo:listRepos", TEAM_REPOS, True),
    ([g(READ, repository="api")], "swr:repo:listRepos", TEAM_REPOS, False),
    ([g(READ, "other")], "swr:repo:listRepos", ALL_REPOS, True),  # the shell filters the answer
    ([g(READ, "other")], "swr:namespace:listNamespaces", "swr:region-a:acc1:namespace:*", True),
    ([g(READ, region="region-b")], "swr:repo:listRepos", ALL_REPOS, False),
    ([g(MANAGE)], "swr:repo:getRepo", ALL_REPOS, False),  # not a list action
    ([], "swr:repo:listRepos", ALL_REPOS, False),
    ([g(MANAGE)], "swr:repo:getRepo", "*", False),
    ([g(MANAGE)], "swr:repo:getRepo", "swr:region-a:acc1:repo:team", False),
]


@pytest.mark.parametrize(("grants", "action", "resource", "expected"), GRANT_CASES)
def test_grant_allows(grants: list[Grant], action: str, resource: str, expected: bool) -> None:
    assert grant_allows(grants, action, resource) is expected


def test_levels_of_the_catalogue() -> None:
    assert required_level("swr:repo:download") is READ
    assert required_level("SWR:REPO:UPLOAD") is EDIT
    assert required_level("swr:repo:deleteAutoSyncRepoJob") is MANAGE
    assert required_level("swr::listQuotas") is None
    assert str(g(EDIT, repository="api")) == "edit on team/api"
    assert str(g(READ)) == "read on namespace team"


COMBINATION_CASES = [
    ([], [g(EDIT)], "swr:repo:upload", ALLOW, "grant"),
    ([deny("swr:repo:upload")], [g(MANAGE)], "swr:repo:upload", DENY, "statement"),
    ([allow("swr:repo:upload")], [], "swr:repo:upload", ALLOW, "statement"),
    ([allow("swr:repo:upload")], [g(MANAGE)], "swr:repo:upload", ALLOW, "statement"),
    ([], [g(READ)], "swr:repo:upload", IMPLICIT, None),
    (
        [deny("swr:repo:upload", None, {"StringEquals": {"g:UserName": "bob"}})],
        [g(EDIT)],
        "swr:repo:upload",
        ALLOW,
        "grant",
    ),
    ([allow("swr:repo:getRepo")], [g(READ, "other")], "swr:repo:upload", IMPLICIT, None),
]


@pytest.mark.parametrize(("statements", "grants", "action", "expected", "basis"), COMBINATION_CASES)
def test_policies_and_grants_combine(
    statements: list[dict[str, Any]], grants: list[Grant], action: str, expected: Outcome, basis: str | None
) -> None:
    policies = [policy(*statements)] if statements else []
    decision = authorize([AccessRequest(action, API, {"g:UserName": "alice"})], policies, grants)
    assert decision.outcome is expected
    assert (decision.statement is not None, decision.grant is not None) == (basis == "statement", basis == "grant")
    if basis == "grant":
        assert decision.explain().endswith(f"is allowed by grant {decision.grant}")


# --- dependent actions ------------------------------------------------------------------------

SYNC = "/v2/manage/namespaces/{namespace}/repos/{repository}/sync_repo"
SYNC_PARAMS = {"namespace": "team", "repository": "api"}
SYNC_CONTEXT = {"swr:TargetRegion": "region-b", "swr:TargetNamespace": "mirror"}
SYNC_EVERYTHING = allow(
    ["swr:repo:createAutoSyncRepoJob", "swr:repo:download", "swr:repo:upload", "swr::createLoginSecret"]
)


def sync_decision(statements: list[dict[str, Any]], grants: tuple[Grant, ...] = ()) -> Any:
    policies = [policy(*statements)] if statements else []
    return authorize_route("POST", SYNC, SCOPE, SYNC_PARAMS, SYNC_CONTEXT, policies, grants)


DEPENDENCY_CASES = [
    ([SYNC_EVERYTHING], ALLOW, "swr:repo:createAutoSyncRepoJob", API),
    (
        [allow(["swr:repo:createAutoSyncRepoJob", "swr:repo:download", "swr::createLoginSecret"])],
        IMPLICIT,
        "swr:repo:upload",
        "swr:region-b:acc1:repo:mirror/api",
    ),
    (
        [allow(["swr:repo:createAutoSyncRepoJob", "swr:repo:upload", "swr::createLoginSecret"])],
        IMPLICIT,
        "swr:repo:download",
        API,
    ),
    (
        [allow(["swr:repo:createAutoSyncRepoJob", "swr:repo:upload", "swr:repo:download"])],
        IMPLICIT,
        "swr::createLoginSecret",
        "*",
    ),
    (
        [SYNC_EVERYTHING, deny("swr:repo:upload", "swr:region-b:*:repo:*")],
        DENY,
        "swr:repo:upload",
        "swr:region-b:acc1:repo:mirror/api",
    ),
    (
        [SYNC_EVERYTHING, deny("swr:repo:upload", "swr:region-c:*:repo:*")],
        ALLOW,
        "swr:repo:createAutoSyncRepoJob",
        API,
    ),
    (
        [
            SYNC_EVERYTHING,
            deny("swr:repo:createAutoSyncRepoJob", None, {"StringEquals": {"swr:TargetRegion": "region-b"}}),
        ],
        DENY,
        "swr:repo:createAutoSyncRepoJob",
        API,
    ),
    (
        [
            SYNC_EVERYTHING,
            deny("swr:repo:createAutoSyncRepoJob", None, {"StringEquals": {"swr:TargetRegion": "region-c"}}),
        ],
        ALLOW,
        "swr:repo:createAutoSyncRepoJob",
        API,
    ),
    (
        [allow("swr:repo:*", "swr:region-a:*:repo:*"), allow("swr::*", "*")],
        IMPLICIT,
        "swr:repo:upload",
        "swr:region-b:acc1:repo:mirror/api",
    ),
]


@pytest.mark.parametrize(("statements", "expected", "action", "resource"), DEPENDENCY_CASES)
def test_sync_needs_its_dependent_actions(
    statements: list[dict[str, Any]], expected: Outcome, action: str, resource: str
) -> None:
    decision = sync_decision(statements)
    assert decision.outcome is expected
    assert (decision.request.action, decision.request.resource) == (action, resource)


def test_grants_in_both_regions_satisfy_sync_dependencies_but_not_the_login_secret() -> None:
    grants = (g(EDIT), g(EDIT, "mirror", region="region-b"))
    assert sync_decision([], grants).request.action == "swr::createLoginSecret"
    decision = sync_decision([allow("swr::createLoginSecret")], grants)
    assert decision.allowed and decision.grant == g(EDIT)


def test_evaluate_with_dependencies_reports_the_first_refusal() -> None:
    requests = route_action("POST", SYNC).requests(SCOPE, SYNC_PARAMS, SYNC_CONTEXT)
    assert [r.action for r in requests] == [
        "swr:repo:createAutoSyncRepoJob",
        "swr::createLoginSecret",
        "swr:repo:download",
        "swr:repo:upload",
    ]
    policies = [policy(allow(["swr:repo:createAutoSyncRepoJob", "swr:repo:download"]))]
    refused = evaluate_with_dependencies(requests[0], requests[1:], policies)
    assert refused.request.action == "swr::createLoginSecret" and not refused.allowed
    allowed = evaluate_with_dependencies(requests[0], requests[1:], [policy(SYNC_EVERYTHING)])
    assert allowed.allowed and allowed.request == requests[0]


# --- the statement index never hides a statement ----------------------------------------------

URN_PARTS = st.sampled_from(["swr", "SWR", "*", "region-a", "r?gion-a", "acc1", "repo", "namespace", "re*", ""])
PATHS = st.sampled_from(["team", "team/api", "team/*", "*", "te*", "team:x/api", "other/api", "*/api", "team/a?i"])
URN_LIKE = st.builds(lambda parts, path: ":".join([*parts, path]), st.lists(URN_PARTS, min_size=1, max_size=5), PATHS)
RESOURCE_LIKE = URN_LIKE.filter(lambda urn: grammar.conforms("resource", urn))


def _reference(request: AccessRequest, policies: list[Policy]) -> Outcome:
    """Every statement checked directly with fnmatch: what the index must agree with."""
    effects = set()
    for candidate in policies:
        for statement in candidate.statements:
            actions = [a.lower() for a in statement.actions]
            resources = [r.split(":", 1)[0].lower() + r[len(r.split(":", 1)[0]) :] for r in statement.resources]
            if not any(fnmatch.fnmatchcase(request.action.lower(), a) for a in actions):
                continue
            if not any(fnmatch.fnmatchcase(request.resource, r) for r in resources):
                continue
            if condition_holds(statement.condition, request.context):
                effects.add(statement.effect)
    return DENY if Effect.DENY in effects else ALLOW if effects else IMPLICIT


@settings(max_examples=300)
@given(
    st.lists(
        st.lists(
            st.builds(
                _statement,
                st.sampled_from(["Allow", "Deny"]),
                ACTION_PATTERNS,
                st.none() | st.lists(RESOURCE_LIKE, min_size=1, max_size=2),
                CONDITIONS,
            ),
            min_size=1,
            max_size=4,
        ),
        min_size=1,
        max_size=3,
    ),
    st.sampled_from(REQUEST_ACTIONS),
    URN_LIKE | st.sampled_from(REQUEST_RESOURCES),
    CONTEXTS,
)
def test_evaluation_agrees_with_checking_every_statement(
    sets: list[list[dict[str, Any]]], action: str, resource: str, context: dict[str, str]
) -> None:
    policies = _policies(sets)
    request = AccessRequest(action, resource, context)
    for _ in range(2):  # the second time through the memoised index
        assert evaluate(request, policies).outcome is _reference(request, policies)


@pytest.mark.parametrize(
    ("pattern", "value", "is_action", "expected"),
    [
        ("*", "", False, True),
        ("*", "swr:r:a:repo:x/y", False, True),
        ("swr:*:*:repo:team/*", "swr:r:a:repo:team/api", False, True),
        ("SWR:*:*:repo:team/*", "swr:r:a:repo:team/api", False, True),
        ("swr:*:*:repo:team/*", "swr:r:a:repo:Team/api", False, False),
        ("swr:*:*:repo:team/?pi", "swr:r:a:repo:team/api", False, True),
        ("swr:repo:*", "SWR:REPO:UPLOAD", True, True),
        ("SWR:REPO:UPLOAD", "swr:repo:upload", True, True),
        ("swr:repo:upl?ad", "swr:repo:UPLOAD", True, True),
        ("swr:repo:upload", "swr:repo:uploads", True, False),
    ],
)
def test_wildcard_matching_of_actions_and_resources(pattern: str, value: str, is_action: bool, expected: bool) -> None:
    from workers.iam.urn import action_matches, resource_matches

    assert (action_matches if is_action else resource_matches)(pattern, value) is expected


def test_statements_for_an_action() -> None:
    found = policy(allow("swr:repo:*"), deny("swr:*:delete*"), allow("swr:namespace:*"))
    assert [s.index for s in found.statements_for("swr:repo:deletetrigger")] == [0, 1]
    assert [s.index for s in found.statements_for("swr::createloginsecret")] == []
