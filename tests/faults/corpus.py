"""The bad-input corpus of fault scenario 5: requests the service must refuse with a clear 4xx.

Each case is one HTTP request, the status the code documents for it (``workers/ingress/routes.py``:
401 token, 415 content type, 413 size, 400 JSON and schema; ``workers/api``: 400 naming the
field, 401 signature, 404 unknown resource, 413 body size) and a word the ``error_msg`` must
contain: the field, header or limit at fault. Surfaces: ``ingress`` (Bearer ingress token),
``api`` (AK/SK-signed as the official SDK signs), ``raw`` (sent as given, no credentials added).
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from tests.support.service import DISTRIBUTION_TYPE

CE_TYPE = "application/cloudevents+json"
MIB = 1024 * 1024
API_BODY_LIMIT = 256 * 1024  # workers.api.bodies.MAX_BODY
POLICIES = "/v2/default/instances/local/namespaces/team/webhook/policies"
TRIGGERS = "/v2/manage/namespaces/team/repos/app/triggers"
RETENTIONS = "/v2/manage/namespaces/team/repos/app/retentions"
RETENTION_POLICIES = "/v2/default/instances/local/namespaces/team/retention/policies"
REPLICATION = "/v2/default/instances/local/replication/policies"
REGISTRIES = "/v2/default/instances/local/registries"  # numbers region-a 1 and region-b 2
SYNC = "/v2/manage/namespaces/team/repos/app/sync_repo"
SHA = "sha256:" + "ab" * 32
DROP = object()  # a mutation value: remove the field


@dataclass(frozen=True)
class BadRequest:
    name: str
    surface: str  # "ingress" | "api" | "raw"
    method: str
    path: str
    body: bytes
    status: int
    needle: str  # must appear in error_msg
    content_type: str | None = "application/json"
    chunked: bool = False
    headers: tuple[tuple[str, str], ...] = ()


# -- valid documents the cases start from ------------------------------------------------------


def push_envelope() -> dict[str, Any]:
    target = {"mediaType": "application/vnd.oci.image.manifest.v1+json", "size": 396, "digest": SHA}
    target.update(repository="team/app", tag="v1", url=f"http://registry.test/v2/team/app/manifests/{SHA}")
    event = {"id": "evt-1", "timestamp": "2026-03-01T00:00:00Z", "action": "push", "target": target}
    return {"events": [{**event, "actor": {"name": "ci"}}]}


def harbor_push() -> dict[str, Any]:
    repository = {"name": "app", "namespace": "team", "repo_full_name": "team/app", "repo_type": "private"}
    resource = {"digest": SHA, "tag": "v1", "resource_url": "harbor.test/team/app:v1"}
    data = {"resources": [resource], "repository": repository}
    return {"type": "PUSH_ARTIFACT", "occur_at": 1795383820, "operator": "ci", "event_data": data}


def harbor_cloudevent() -> dict[str, Any]:
    document = harbor_push()
    return {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/projects/1",
        "type": "harbor.artifact.pushed",
        "time": "2026-03-01T00:00:00Z",
        "data": document["event_data"],
    }


def trigger_body() -> dict[str, Any]:
    return {
        "action": "update",
        "app_type": "deployments",
        "application": "web",
        "cluster_id": "c1",
        "cluster_name": "prod",
        "cluster_ns": "default",
        "condition": ".*",
        "container": "",
        "enable": "true",
        "name": "redeploy",
        "trigger_mode": "cce",
        "trigger_type": "all",
    }


def policy_body(address: str = "http://127.0.0.1:9/hook") -> dict[str, Any]:
    return {
        "name": "notify",
        "targets": [{"type": "http", "address": address}],
        "event_types": ["PUSH_ARTIFACT"],
        "enabled": True,
    }


def basic_retention() -> dict[str, Any]:
    return {"algorithm": "or", "rules": [{"template": "tag_rule", "params": {"num": 5}, "tag_selectors": []}]}


def enterprise_retention() -> dict[str, Any]:
    selectors = [{"kind": "doublestar", "decoration": "matches", "pattern": "**"}]
    rule = {
        "priority": 1,
        "disabled": False,
        "action": "retain",
        "template": "latestPushedK",
        "params": {"latestPushedK": 10},
        "tag_selectors": selectors,
        "scope_selectors": {"repository": [{"kind": "doublestar", "decoration": "repoMatches", "pattern": "**"}]},
    }
    return {"name": "keep", "algorithm": "or", "rules": [rule], "trigger": {"type": "manual"}}


def replication_policy() -> dict[str, Any]:
    return {
        "name": "mirror",
        "src_registry": {"id": 1},
        "dest_registry": {"id": 2},
        "dest_namespace": "mirror",
        "filters": [],
        "trigger": {"type": "manual"},
        "override": True,
        "enabled": True,
    }


# -- building cases ----------------------------------------------------------------------------


def changed(document: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    """A copy of ``document`` with the dotted ``path`` (list indexes as numbers) set or dropped."""
    result = copy.deepcopy(document)
    *parents, last = path.split(".")
    node: Any = result
    for part in parents:
        node = node[int(part)] if isinstance(node, list) else node[part]
    if value is DROP:
        del node[last]
    else:
        node[int(last) if isinstance(node, list) else last] = value
    return result


def encoded(document: Any) -> bytes:
    return json.dumps(document).encode()


Mutation = tuple[str, str, Any, str]  # (case name, dotted path, value, needle)


def mutated(
    surface: str, path: str, base: Callable[[], dict[str, Any]], mutations: list[Mutation], content_type: str
) -> list[BadRequest]:
    return [
        BadRequest(name, surface, "POST", path, encoded(changed(base(), field, value)), 400, needle, content_type)
        for name, field, value, needle in mutations
    ]


def nested(depth: int) -> bytes:
    return b'{"events": ' + b"[" * depth + b"]" * depth + b"}"


DISTRIBUTION_MUTATIONS: list[Mutation] = [
    ("events is an object", "events", {}, "events"),
    ("event is a number", "events.0", 42, "events[0]"),
    ("id is a number", "events.0.id", 42, "events[0].id"),
    ("id is empty", "events.0.id", "", "events[0].id"),
    ("id is 300 characters", "events.0.id", "x" * 300, "events[0].id"),
    ("id with a NUL", "events.0.id", "evt\u0000", "events[0].id: contains a NUL"),
    ("timestamp is a boolean", "events.0.timestamp", True, "events[0].timestamp"),
    ("timestamp is prose", "events.0.timestamp", "yesterday", "events[0].timestamp"),
    ("timestamp missing", "events.0.timestamp", DROP, "events[0].timestamp"),
    ("timestamp is a huge number", "events.0.timestamp", 1e20, "events[0].timestamp"),
    ("timestamp before year 1 in UTC", "events.0.timestamp", "0001-01-01T00:00:00+14:00", "events[0].timestamp"),
    ("timestamp after 9999 in UTC", "events.0.timestamp", "9999-12-31T23:59:59-14:00", "events[0].timestamp"),
    ("action unknown", "events.0.action", "pwn", "events[0].action"),
    ("action is a number", "events.0.action", 7, "events[0].action"),
    ("target missing", "events.0.target", DROP, "events[0].target"),
    ("target is a string", "events.0.target", "team/app:v1", "events[0].target"),
    ("repository missing", "events.0.target.repository", DROP, "events[0].target.repository"),
    ("repository is a number", "events.0.target.repository", 42, "events[0].target.repository"),
    ("repository empty", "events.0.target.repository", "", "events[0].target.repository"),
    ("repository upper case", "events.0.target.repository", "Team/App", "events[0].target.repository"),
    ("repository empty component", "events.0.target.repository", "team//app", "events[0].target.repository"),
    ("repository trailing slash", "events.0.target.repository", "team/app/", "events[0].target.repository"),
    ("repository leading dash", "events.0.target.repository", "-team/app", "events[0].target.repository"),
    ("repository double dot", "events.0.target.repository", "team/a..b", "events[0].target.repository"),
    ("repository with a tag", "events.0.target.repository", "team/app:v1", "events[0].target.repository"),
    ("repository not ASCII", "events.0.target.repository", "tëam/app", "events[0].target.repository"),
    ("repository 256 characters", "events.0.target.repository", "team/" + "a" * 251, "events[0].target.repository"),
    ("repository with a NUL", "events.0.target.repository", "team/app\u0000", "events[0].target.repository"),
    ("tag 129 characters", "events.0.target.tag", "v" * 129, "events[0].target.tag"),
    ("tag with a slash", "events.0.target.tag", "v1/../x", "events[0].target.tag"),
    ("tag leading dash", "events.0.target.tag", "-v1", "events[0].target.tag"),
    ("tag leading dot", "events.0.target.tag", ".v1", "events[0].target.tag"),
    ("tag with a space", "events.0.target.tag", "v 1", "events[0].target.tag"),
    ("tag with a NUL", "events.0.target.tag", "v1\u0000", "events[0].target.tag"),
    ("tag is a number", "events.0.target.tag", 1.5, "events[0].target.tag"),
    ("digest upper-case hex", "events.0.target.digest", "sha256:" + "AB" * 32, "events[0].target.digest"),
    ("digest 63 hex digits", "events.0.target.digest", "sha256:" + "a" * 63, "events[0].target.digest"),
    ("digest 65 hex digits", "events.0.target.digest", "sha256:" + "a" * 65, "events[0].target.digest"),
    ("digest without encoded part", "events.0.target.digest", "sha256", "events[0].target.digest"),
    ("digest upper-case algorithm", "events.0.target.digest", "SHA256:" + "a" * 64, "events[0].target.digest"),
    ("digest sha512 of sha256 length", "events.0.target.digest", "sha512:" + "a" * 64, "events[0].target.digest"),
    ("digest is a number", "events.0.target.digest", 42, "events[0].target.digest"),
    ("size negative", "events.0.target.size", -1, "events[0].target.size"),
    ("size is prose", "events.0.target.size", "big", "events[0].target.size"),
    ("size beyond 64 bits signed", "events.0.target.size", 2**64 - 1, "events[0].target.size"),
    ("size huge float", "events.0.target.size", 1e19, "events[0].target.size"),
    ("mediaType is a number", "events.0.target.mediaType", 42, "events[0].target.mediaType"),
    ("actor name with a NUL", "events.0.actor.name", "ci\u0000bot", "events[0].actor.name: contains a NUL"),
]


def distribution_cases() -> list[BadRequest]:
    def bad(
        name: str, body: bytes, status: int, needle: str, content_type: str | None = DISTRIBUTION_TYPE
    ) -> BadRequest:
        return BadRequest(name, "ingress", "POST", "/events/distribution", body, status, needle, content_type)

    valid = encoded(push_envelope())
    cases = mutated("ingress", "/events/distribution", push_envelope, DISTRIBUTION_MUTATIONS, DISTRIBUTION_TYPE)
    cases += [
        bad(
            "no digest and no tag",
            encoded(changed(changed(push_envelope(), "events.0.target.tag", DROP), "events.0.target.digest", DROP)),
            400,
            "digest",
        ),
        bad("truncated JSON", valid[: len(valid) // 2], 400, "not valid JSON"),
        bad("empty body", b"", 400, "not valid JSON"),
        bad("JSON array", b"[]", 400, "body"),
        bad("JSON string", b'"events"', 400, "body"),
        bad("JSON null", b"null", 400, "body"),
        bad("JSON number", b"42", 400, "body"),
        bad("raw NUL byte", valid.replace(b'"ci"', b'"c\x00i"'), 400, "not valid JSON"),
        bad("invalid UTF-8", valid.replace(b'"ci"', b'"c\xffi"'), 400, "not valid JSON"),
        bad("number beyond double", valid.replace(b"396", b"1e400"), 400, "not valid JSON"),
        bad("nested 2,000 deep", nested(2000), 400, "not valid JSON"),
        bad("nested 500 deep", nested(500), 400, "events[0]"),
        bad("content type text/plain", valid, 415, "text/plain", "text/plain"),
        bad("content type XML", valid, 415, "application/xml", "application/xml"),
        bad("no content type", valid, 415, "Content-Type", None),
        bad("body over 1 MiB", b" " * (MIB + 1), 413, "limit"),
        BadRequest(
            "chunked body over 1 MiB",
            "ingress",
            "POST",
            "/events/distribution",
            b" " * (MIB + 4096),
            413,
            "limit",
            DISTRIBUTION_TYPE,
            chunked=True,
        ),
        BadRequest("no token", "raw", "POST", "/events/distribution", valid, 401, "Authorization", DISTRIBUTION_TYPE),
        BadRequest(
            "wrong token",
            "raw",
            "POST",
            "/events/distribution",
            valid,
            401,
            "not valid",
            DISTRIBUTION_TYPE,
            headers=(("Authorization", "Bearer not-the-token"),),
        ),
        BadRequest(
            "Basic credentials",
            "raw",
            "POST",
            "/events/distribution",
            valid,
            401,
            "Bearer",
            DISTRIBUTION_TYPE,
            headers=(("Authorization", "Basic YWRtaW46YWRtaW4="),),
        ),
        BadRequest(
            "unknown region",
            "ingress",
            "POST",
            "/events/distribution?region=mars-1",
            valid,
            400,
            "mars-1",
            DISTRIBUTION_TYPE,
        ),
        BadRequest("GET instead of POST", "ingress", "GET", "/events/distribution", b"", 405, "Method Not Allowed"),
    ]
    return cases


HARBOR_MUTATIONS: list[Mutation] = [
    ("harbor type missing", "type", DROP, "type"),
    ("harbor type is a number", "type", 42, "type"),
    ("harbor occur_at is prose", "occur_at", "yesterday", "occur_at"),
    ("harbor occur_at huge", "occur_at", 1e300, "occur_at"),
    ("harbor occur_at beyond 64 bits", "occur_at", 2**64 - 1, "occur_at"),
    ("harbor event_data is a string", "event_data", "x", "event_data"),
    ("harbor repository missing", "event_data.repository", DROP, "event_data.repository"),
    ("harbor repository name empty", "event_data.repository.name", "", "event_data.repository.name"),
    ("harbor repository invalid", "event_data.repository.repo_full_name", "Team/App", "repository"),
    ("harbor resources is a string", "event_data.resources", "x", "event_data.resources"),
    ("harbor tag 129 characters", "event_data.resources.0.tag", "v" * 129, "event_data.resources[0].tag"),
    ("harbor digest invalid", "event_data.resources.0.digest", "sha256:XYZ", "event_data.resources[0].digest"),
    ("harbor operator with a NUL", "operator", "c\u0000i", "operator: contains a NUL"),
]

CLOUDEVENT_MUTATIONS: list[Mutation] = [
    ("cloudevent specversion 0.3", "specversion", "0.3", "specversion"),
    ("cloudevent id is a number", "id", 42, "id"),
    ("cloudevent time is prose", "time", "soon", "time"),
    ("cloudevent time before year 1 in UTC", "time", "0001-01-01T00:00:00+14:00", "time"),
    ("cloudevent type missing", "type", DROP, "type"),
    ("cloudevent tag invalid", "data.resources.0.tag", "-bad", "data.resources[0].tag"),
]


def harbor_cases() -> list[BadRequest]:
    cases = mutated("ingress", "/events/harbor", harbor_push, HARBOR_MUTATIONS, "application/json")
    cases += mutated("ingress", "/events/harbor", harbor_cloudevent, CLOUDEVENT_MUTATIONS, CE_TYPE)
    no_reference = changed(
        changed(harbor_push(), "event_data.resources.0.tag", DROP), "event_data.resources.0.digest", DROP
    )
    cases += [
        BadRequest(
            "harbor no digest and no tag", "ingress", "POST", "/events/harbor", encoded(no_reference), 400, "digest"
        ),
        BadRequest(
            "harbor Distribution content type",
            "ingress",
            "POST",
            "/events/harbor",
            encoded(harbor_push()),
            415,
            DISTRIBUTION_TYPE,
            DISTRIBUTION_TYPE,
        ),
    ]
    return cases


def api(name: str, method: str, path: str, body: Any, status: int, needle: str) -> BadRequest:
    raw = body if isinstance(body, bytes) else encoded(body)
    return BadRequest(name, "api", method, path, raw, status, needle)


# (case name, trigger field, value, needle); conditions as RE2 refuses them, never hang.
TRIGGER_MUTATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("regex unclosed group", {"trigger_type": "regular", "condition": "(unclosed"}, "condition"),
    ("regex backreference", {"trigger_type": "regular", "condition": r"(a+)\1"}, "condition"),
    ("regex lookbehind", {"trigger_type": "regular", "condition": "(?<=a)b"}, "condition"),
    ("regex reversed repeat", {"trigger_type": "regular", "condition": "a{2,1}"}, "condition"),
    ("regex reversed class", {"trigger_type": "regular", "condition": "[z-a]"}, "condition"),
    ("regex 1,025 characters", {"trigger_type": "regular", "condition": "a" * 1025}, "condition"),
    ("semver range cut short", {"trigger_type": "semver", "condition": ">=1.2.3 <"}, "condition"),
    ("tag list with a bad tag", {"trigger_type": "tag", "condition": "v1;-v2"}, "condition"),
    ("trigger_type unknown", {"trigger_type": "sometimes"}, "trigger_type"),
    ("trigger_type is a number", {"trigger_type": 7}, "trigger_type"),
    ("app_type unknown", {"app_type": "pods"}, "app_type"),
    ("name is a number", {"name": 42}, "name"),
    ("name with spaces", {"name": "re deploy!"}, "name"),
    ("name with a trailing newline", {"name": "redeploy\n"}, "name"),
    ("application with a trailing newline", {"application": "web\n"}, "application"),
    ("application invalid", {"application": "Not_A_Name"}, "application"),
    ("enable is maybe", {"enable": "maybe"}, "enable"),
    ("rollout_timeout is a string", {"rollout_timeout": "10"}, "rollout_timeout"),
    ("rollout_timeout huge", {"rollout_timeout": 1e308}, "rollout_timeout"),
    ("no cluster", {"cluster_id": "", "cluster_name": ""}, "cluster_id"),
    ("trigger_mode unknown", {"trigger_mode": "k8s"}, "trigger_mode"),
]

POLICY_MUTATIONS: list[tuple[str, dict[str, Any], str]] = [
    ("SSRF metadata address", {"targets": [{"address": "http://169.254.169.254/latest/meta-data/"}]}, "targets[0]"),
    ("SSRF private address", {"targets": [{"address": "http://10.1.2.3/hook"}]}, "targets[0].address"),
    ("SSRF hex-encoded metadata", {"targets": [{"address": "http://0xa9fea9fe/"}]}, "targets[0].address"),
    ("SSRF IPv6 loopback", {"targets": [{"address": "http://[::1]/"}]}, "targets[0].address"),
    ("SSRF IPv4-mapped IPv6", {"targets": [{"address": "http://[::ffff:169.254.169.254]/"}]}, "targets[0].address"),
    ("SSRF shared address space", {"targets": [{"address": "http://100.64.0.1/"}]}, "targets[0].address"),
    ("SSRF multicast", {"targets": [{"address": "http://224.0.0.1/"}]}, "targets[0].address"),
    ("SSRF unspecified", {"targets": [{"address": "http://0.0.0.0/"}]}, "targets[0].address"),
    ("target scheme ftp", {"targets": [{"address": "ftp://example.com/"}]}, "targets[0].address"),
    ("target not a URL", {"targets": [{"address": "not a url"}]}, "targets[0].address"),
    ("targets is a string", {"targets": "http://127.0.0.1:9/"}, "targets"),
    ("target is a number", {"targets": [42]}, "targets[0]"),
    ("target type unknown", {"targets": [{"address": "http://127.0.0.1:9/", "type": "grpc"}]}, "targets[0].type"),
    (
        "auth header injection",
        {"targets": [{"address": "http://127.0.0.1:9/", "auth_header": "X: a\r\nY: b"}]},
        "targets[0].auth_header",
    ),
    ("event type unknown", {"event_types": ["PUSH"]}, "event_types"),
    ("event types a string", {"event_types": "PUSH_ARTIFACT"}, "event_types"),
    ("retry schedule negative", {"retry_schedule": [-1]}, "retry_schedule"),
    ("retry schedule prose", {"retry_schedule": "fast"}, "retry_schedule"),
    (
        "scope regexp unclosed",
        {"scope_rules": [{"tag_selectors": [{"kind": "regexp", "decoration": "matches", "pattern": "("}]}]},
        "scope_rules[0].tag_selectors[0]",
    ),
    (
        "scope kind unknown",
        {"scope_rules": [{"tag_selectors": [{"kind": "glob", "decoration": "matches", "pattern": "*"}]}]},
        "kind",
    ),
    ("enabled is maybe", {"enabled": "maybe"}, "enabled"),
    ("name empty", {"name": ""}, "name"),
]


def api_cases() -> list[BadRequest]:
    cases = [
        api(name, "POST", TRIGGERS, {**trigger_body(), **change}, 400, needle)
        for name, change, needle in TRIGGER_MUTATIONS
    ]
    cases += [
        api(name, "POST", POLICIES, {**policy_body(), **change}, 400, needle)
        for name, change, needle in POLICY_MUTATIONS
    ]
    padded = encoded({**trigger_body(), "name": "padded", "padding": "x" * API_BODY_LIMIT})
    cases += [
        api("trigger body a JSON array", "POST", TRIGGERS, b"[]", 400, "request body"),
        api("trigger body truncated", "POST", TRIGGERS, encoded(trigger_body())[:40], 400, "not valid JSON"),
        api("trigger body empty", "POST", TRIGGERS, b"", 400, "request body"),
        api("trigger body over 256 KiB", "POST", TRIGGERS, padded, 413, str(API_BODY_LIMIT)),
        BadRequest(
            "trigger body over 256 KiB, chunked",
            "api",
            "POST",
            TRIGGERS,
            padded,
            413,
            str(API_BODY_LIMIT),
            chunked=True,
        ),
        api("trigger body over 4 MiB", "POST", TRIGGERS, b" " * (4 * MIB + 1), 413, str(4 * MIB)),
        api(
            "namespace upper case",
            "POST",
            "/v2/manage/namespaces/Team/repos/app/triggers",
            trigger_body(),
            400,
            "Team/app",
        ),
        api(
            "path repository double dot",
            "POST",
            "/v2/manage/namespaces/team/repos/a..b/triggers",
            trigger_body(),
            400,
            "team/a..b",
        ),
        api(
            "path repository empty component",
            "POST",
            "/v2/manage/namespaces/team/repos/app$$x/triggers",
            trigger_body(),
            400,
            "team/app//x",
        ),
        api("trigger unknown", "GET", f"{TRIGGERS}/nope", None, 404, "nope"),
        api("history id not a number", "POST", f"{TRIGGERS}/nope/histories/abc/retry", None, 400, "history_id"),
        api(
            "policy namespace upper case", "POST", POLICIES.replace("/team/", "/Team/"), policy_body(), 400, "namespace"
        ),
        api(
            "policy namespace with a slash",
            "POST",
            POLICIES.replace("/team/", "/te$am/"),
            policy_body(),
            400,
            "namespace",
        ),
        api(
            "policy of another project",
            "POST",
            POLICIES.replace("/default/", "/other/"),
            policy_body(),
            404,
            "instance",
        ),
        api("policy id not a number", "GET", f"{POLICIES}/abc", None, 400, "policy_id"),
        api("policy unknown", "PUT", f"{POLICIES}/999999", policy_body(), 404, "999999"),
        api("job id not a number", "POST", f"{POLICIES}/999999/jobs/abc/retry", None, 400, "job_id"),
        api("job of an unknown policy", "POST", f"{POLICIES}/999999/jobs/1/retry", None, 404, "999999"),
        api("retention algorithm and", "POST", RETENTIONS, {**basic_retention(), "algorithm": "and"}, 400, "algorithm"),
        api("retention rules a string", "POST", RETENTIONS, {**basic_retention(), "rules": "x"}, 400, "rules"),
        api(
            "retention days prose",
            "POST",
            RETENTIONS,
            changed(
                basic_retention(), "rules.0", {"template": "date_rule", "params": {"days": "x"}, "tag_selectors": []}
            ),
            400,
            "rules[0]",
        ),
        api(
            "retention template unknown",
            "POST",
            RETENTIONS,
            changed(basic_retention(), "rules.0.template", "nope"),
            400,
            "rules[0]",
        ),
        api(
            "retention namespace upper case",
            "POST",
            RETENTIONS.replace("/team/", "/Team/"),
            basic_retention(),
            400,
            "repository",
        ),
        api(
            "enterprise retention K negative",
            "POST",
            RETENTION_POLICIES,
            changed(enterprise_retention(), "rules.0.params.latestPushedK", -1),
            400,
            "rules[0].params.latestPushedK",
        ),
        api(
            "enterprise retention trigger unknown",
            "POST",
            RETENTION_POLICIES,
            {**enterprise_retention(), "trigger": {"type": "sometimes"}},
            400,
            "trigger.type",
        ),
        api(
            "enterprise retention bad cron",
            "POST",
            RETENTION_POLICIES,
            {**enterprise_retention(), "trigger": {"type": "scheduled", "trigger_settings": {"cron": "not a cron"}}},
            400,
            "cron",
        ),
        api(
            "enterprise retention name a number",
            "POST",
            RETENTION_POLICIES,
            {**enterprise_retention(), "name": 42},
            400,
            "name",
        ),
        api(
            "replication registry prose",
            "POST",
            REPLICATION,
            {**replication_policy(), "src_registry": {"id": "one"}},
            400,
            "src_registry",
        ),
        api(
            "replication registry true",
            "POST",
            REPLICATION,
            {**replication_policy(), "src_registry": {"id": True}},
            400,
            "src_registry",
        ),
        api(
            "replication trigger unknown",
            "POST",
            REPLICATION,
            {**replication_policy(), "trigger": {"type": "x"}},
            400,
            "trigger.type",
        ),
        api(
            "replication filters a string",
            "POST",
            REPLICATION,
            {**replication_policy(), "filters": "x"},
            400,
            "filters",
        ),
        api(
            "replication dest namespace invalid",
            "POST",
            REPLICATION,
            {**replication_policy(), "dest_namespace": "Bad Name!"},
            400,
            "dest_namespace",
        ),
        api(
            "sync region unknown",
            "POST",
            SYNC,
            {"remoteRegionId": "mars-1", "remoteNamespace": "team"},
            400,
            "remoteRegionId",
        ),
        api(
            "sync namespace invalid",
            "POST",
            SYNC,
            {"remoteRegionId": "region-b", "remoteNamespace": "UP"},
            400,
            "remoteNamespace",
        ),
        api(
            "sync namespace trailing newline",
            "POST",
            SYNC,
            {"remoteRegionId": "region-b", "remoteNamespace": "team\n"},
            400,
            "remoteNamespace",
        ),
        api("repos limit prose", "GET", "/v2/manage/repos?limit=abc", None, 400, "limit"),
        api("repos order column unknown", "GET", "/v2/manage/repos?order_column=bogus", None, 400, "order_column"),
        api("iam user name a number", "POST", "/v3/iam/users", {"name": 42}, 400, "name"),
        api(
            "iam policy effect unknown",
            "POST",
            "/v3/iam/policies",
            changed(iam_policy(), "document.Statement.0.Effect", "Maybe"),
            400,
            "Effect",
        ),
        BadRequest("unsigned API call", "raw", "GET", "/v2/manage/repos", b"", 401, "Authorization", None),
        BadRequest(
            "bogus signature",
            "raw",
            "GET",
            "/v2/manage/repos",
            b"",
            401,
            "Authorization",
            None,
            headers=(
                ("Authorization", "SDK-HMAC-SHA256 Access=x, SignedHeaders=host, Signature=y"),
                ("X-Sdk-Date", "20260301T000000Z"),
            ),
        ),
    ]
    return cases


def corpus() -> list[BadRequest]:
    return distribution_cases() + harbor_cases() + api_cases()


def iam_policy() -> dict[str, Any]:
    return {"name": "p", "document": {"Version": "1.1", "Statement": [{"Effect": "Allow", "Action": ["swr:*:*"]}]}}


def bases() -> list[BadRequest]:
    """The valid requests the cases are mutations of, with their success status.

    Sent after the corpus: each must succeed, so every case is refused for its own mutation.
    """
    return [
        BadRequest(
            "base envelope",
            "ingress",
            "POST",
            "/events/distribution",
            encoded(push_envelope()),
            202,
            "",
            DISTRIBUTION_TYPE,
        ),
        BadRequest("base Harbor payload", "ingress", "POST", "/events/harbor", encoded(harbor_push()), 202, ""),
        BadRequest(
            "base CloudEvent", "ingress", "POST", "/events/harbor", encoded(harbor_cloudevent()), 202, "", CE_TYPE
        ),
        api("base trigger", "POST", TRIGGERS, trigger_body(), 201, ""),
        api("base webhook policy", "POST", POLICIES, policy_body(), 201, ""),
        api("base retention", "POST", RETENTIONS, basic_retention(), 201, ""),
        api("base enterprise retention", "POST", RETENTION_POLICIES, enterprise_retention(), 201, ""),
        api("base replication policy", "POST", REPLICATION, replication_policy(), 201, ""),
        api("base sync rule", "POST", SYNC, {"remoteRegionId": "region-b", "remoteNamespace": "team"}, 201, ""),
        api("base IAM user", "POST", "/v3/iam/users", {"name": "alice"}, 201, ""),
        api("base IAM policy", "POST", "/v3/iam/policies", iam_policy(), 201, ""),
    ]
