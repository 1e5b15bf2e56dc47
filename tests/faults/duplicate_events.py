"""The events of fault scenario 4 and what they should leave behind, computed from them alone.

Distribution pushes (tagged manifests and blobs) over five repositories in two namespaces,
Harbor default payloads (some with two resources) and CloudEvents, deletes by tag and by
digest; ``send_plan`` sends each envelope three times and re-batches the events, and
``expected_effects`` says which rows, webhooks and rollouts one copy of each event causes.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.service import DISTRIBUTION_TYPE

REGISTRY = "http://127.0.0.1:9"  # only its host is used: in webhook bodies and rolled-out images
REGISTRY_HOST = "127.0.0.1:9"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
BASE = datetime(2026, 3, 1, tzinfo=UTC)
DELETED_LATER = BASE + timedelta(days=1)

REPOS = ("team/app0", "team/app1", "team/app2", "team/api/svc", "other/lib")
PUSHES = 240
BLOBS = 20
TAG_DELETES = tuple(range(0, PUSHES, 8))
DIGEST_DELETES = tuple(range(4, PUSHES, 16))
ROLLED_OUT = (0, 50, 100, 150, 200)  # tags of team/app0 the deployment trigger names
HARBOR_PAYLOADS = 24
HARBOR_DELETES = (0, 2, 4, 6, 8, 10)
CLOUDEVENTS = 6
COPIES = 3
Request = tuple[str, Any, str]  # (ingress path, JSON document, content type)


def digest_of(text_value: str) -> str:
    return "sha256:" + hashlib.sha256(text_value.encode()).hexdigest()


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


# -- the events --------------------------------------------------------------------------------


def push_event(i: int) -> dict[str, Any]:
    name, digest = REPOS[i % len(REPOS)], digest_of(f"manifest-{i}")
    target = {"mediaType": OCI_MANIFEST, "size": 400 + i, "digest": digest, "repository": name, "tag": f"v{i}"}
    target["url"] = f"{REGISTRY}/v2/{name}/manifests/{digest}"
    return distribution_event(f"push-{i}", "push", BASE + timedelta(seconds=i), target)


def blob_event(j: int) -> dict[str, Any]:
    name, digest = REPOS[j % len(REPOS)], digest_of(f"layer-{j}")
    target = {"mediaType": OCI_LAYER, "size": 1000 + j, "digest": digest, "repository": name}
    target["url"] = f"{REGISTRY}/v2/{name}/blobs/{digest}"
    return distribution_event(f"blob-{j}", "push", BASE + timedelta(seconds=j), target)


def tag_delete_event(i: int) -> dict[str, Any]:
    target = {"repository": REPOS[i % len(REPOS)], "tag": f"v{i}"}
    return distribution_event(f"delete-tag-{i}", "delete", DELETED_LATER + timedelta(seconds=i), target)


def digest_delete_event(i: int) -> dict[str, Any]:
    target = {"repository": REPOS[i % len(REPOS)], "digest": digest_of(f"manifest-{i}")}
    return distribution_event(f"delete-digest-{i}", "delete", DELETED_LATER + timedelta(seconds=i), target)


def distribution_event(event_id: str, action: str, at: datetime, target: dict[str, Any]) -> dict[str, Any]:
    return {"id": event_id, "timestamp": iso(at), "action": action, "target": target, "actor": {"name": "ci"}}


def harbor_resources(k: int) -> list[dict[str, str]]:
    name = harbor_repository(k)
    count = 2 if k % 3 == 0 else 1
    return [
        {"digest": digest_of(f"harbor-{k}-{r}"), "tag": f"h{k}r{r}", "resource_url": f"harbor.test/{name}:h{k}r{r}"}
        for r in range(count)
    ]


def harbor_repository(k: int) -> str:
    return "team/web" if k % 2 == 0 else "other/site"


def harbor_payload(kind: str, occur_at: datetime, name: str, resources: list[dict[str, str]]) -> dict[str, Any]:
    namespace, _, repository = name.partition("/")
    return {
        "type": kind,
        "occur_at": int(occur_at.timestamp()),
        "operator": "robot$ci",
        "event_data": {
            "resources": resources,
            "repository": {"name": repository, "namespace": namespace, "repo_full_name": name, "repo_type": "private"},
        },
    }


def cloudevent(k: int) -> dict[str, Any]:
    resource = {"digest": digest_of(f"cloudevent-{k}"), "tag": f"c{k}", "resource_url": f"harbor.test/team/web:c{k}"}
    return {
        "specversion": "1.0",
        "id": f"ce-{k}",
        "source": "/projects/1/webhook/policies/1",
        "type": "harbor.artifact.pushed",
        "time": iso(BASE + timedelta(hours=2, seconds=k)),
        "datacontenttype": "application/json",
        "operator": "robot$ci",
        "data": {
            "resources": [resource],
            "repository": {"name": "web", "namespace": "team", "repo_full_name": "team/web", "repo_type": "private"},
        },
    }


@dataclass
class Expected:
    """What the events should leave behind, computed from the events alone."""

    history: int = 0
    rows: dict[tuple[str, str], tuple[str, bool]] = field(default_factory=dict)  # (name, ref) → (kind, deleted)
    webhooks: set[tuple[str, str, str, str | None]] = field(default_factory=set)
    rollouts: set[str] = field(default_factory=set)

    def push(self, name: str, tag: str | None, digest: str, kind: str = "manifest") -> None:
        self.history += 1
        self.rows.setdefault((name, digest), (kind, False))
        if tag is not None:
            self.rows[(name, tag)] = ("tag", False)
            self.webhook("PUSH_ARTIFACT", name, tag, digest)

    def delete(self, name: str, tag: str | None, digest: str | None) -> None:
        """A delete by tag marks the tag row; one by digest alone the digest row and its tags."""
        self.history += 1
        if tag is not None:
            self.rows[(name, tag)] = ("tag", True)
        elif digest is not None:
            self.rows[(name, digest)] = ("manifest", True)
        self.webhook("DELETE_ARTIFACT", name, tag or digest or "", digest)

    def webhook(self, kind: str, name: str, tag: str, digest: str | None) -> None:
        if name.startswith("team/"):  # the policy's namespace
            self.webhooks.add((kind, name, tag, digest))


def expected_effects() -> Expected:
    expected = Expected()
    for i in range(PUSHES):
        expected.push(REPOS[i % len(REPOS)], f"v{i}", digest_of(f"manifest-{i}"))
        if i % len(REPOS) == 0 and i in ROLLED_OUT:
            expected.rollouts.add(f"{REGISTRY_HOST}/team/app0:v{i}@{digest_of(f'manifest-{i}')}")
    for j in range(BLOBS):
        expected.history += 1
        expected.rows[(REPOS[j % len(REPOS)], digest_of(f"layer-{j}"))] = ("blob", False)
    for k in range(HARBOR_PAYLOADS):
        for resource in harbor_resources(k):
            expected.push(harbor_repository(k), resource["tag"], resource["digest"])
    for k in range(CLOUDEVENTS):
        expected.push("team/web", f"c{k}", digest_of(f"cloudevent-{k}"))
    for i in TAG_DELETES:
        expected.delete(REPOS[i % len(REPOS)], f"v{i}", None)
    for i in DIGEST_DELETES:
        name, digest = REPOS[i % len(REPOS)], digest_of(f"manifest-{i}")
        expected.delete(name, None, digest)
        expected.rows[(name, f"v{i}")] = ("tag", True)  # a digest delete takes the tags on it along
    for k in HARBOR_DELETES:
        resource = harbor_resources(k)[0]
        expected.delete(harbor_repository(k), resource["tag"], resource["digest"])
    expected.push("dlq/app", "v1", digest_of("dead-letter"))
    return expected


# -- sending -----------------------------------------------------------------------------------


def envelopes(events: Sequence[dict[str, Any]], sizes: Sequence[int]) -> list[dict[str, Any]]:
    """``events`` cut into envelopes whose sizes cycle through ``sizes``."""
    cut, start, index = [], 0, 0
    while start < len(events):
        size = sizes[index % len(sizes)]
        cut.append({"events": list(events[start : start + size])})
        start, index = start + size, index + 1
    return cut


def distribution(envelope_list: Sequence[dict[str, Any]]) -> list[Request]:
    return [("/events/distribution", envelope, DISTRIBUTION_TYPE) for envelope in envelope_list]


def harbor(payloads: Sequence[dict[str, Any]], content_type: str = "application/json") -> list[Request]:
    return [("/events/harbor", payload, content_type) for payload in payloads]


def send_plan() -> list[list[Request]]:
    """Rounds to send one after the other (each concurrently): every envelope arrives 3 times.

    Round 1 once; round 2 again plus the events re-batched; deletes twice; round 3 a third
    time plus envelopes mixing deletes with older duplicates of what they delete.
    """
    pushes = [push_event(i) for i in range(PUSHES)] + [blob_event(j) for j in range(BLOBS)]
    batched = distribution(envelopes(pushes, (1, 2, 3, 4)))
    shuffled = random.Random(4).sample(pushes, len(pushes))
    rebatched = distribution(envelopes(shuffled, (7,)))
    harbor_pushes = [
        harbor_payload("PUSH_ARTIFACT", BASE + timedelta(hours=1, seconds=k), harbor_repository(k), harbor_resources(k))
        for k in range(HARBOR_PAYLOADS)
    ]
    harbor_split = [  # a payload of two resources sent again as two payloads: the same two events
        {**payload, "event_data": {**payload["event_data"], "resources": [resource]}}
        for payload in harbor_pushes
        if len(payload["event_data"]["resources"]) > 1
        for resource in payload["event_data"]["resources"]
    ]
    cloud = harbor([cloudevent(k) for k in range(CLOUDEVENTS)], "application/cloudevents+json")
    deletes = distribution(
        [{"events": [tag_delete_event(i)]} for i in TAG_DELETES]
        + [{"events": [digest_delete_event(i)]} for i in DIGEST_DELETES]
    )
    harbor_deletes = harbor(
        [
            harbor_payload("DELETE_ARTIFACT", DELETED_LATER + timedelta(seconds=k), "team/web", harbor_resources(k)[:1])
            for k in HARBOR_DELETES
        ]
    )
    # A delete and an older duplicate of its push in one envelope, both orders, a repeated event too.
    mixed = distribution(
        [{"events": [tag_delete_event(i), push_event(i), push_event(i)]} for i in TAG_DELETES[:10]]
        + [{"events": [push_event(i), digest_delete_event(i)]} for i in DIGEST_DELETES[:5]]
        + [{"events": [digest_delete_event(i), push_event(i)]} for i in DIGEST_DELETES[5:10]]
    )
    dead_letter = distribution([{"events": [dead_letter_push()]}])
    return [
        batched + harbor(harbor_pushes) + cloud + dead_letter * COPIES,
        batched + rebatched + harbor(harbor_pushes) + harbor(harbor_split) + cloud,
        deletes + harbor_deletes,
        deletes + harbor_deletes,
        batched + harbor(harbor_pushes) + cloud + deletes + harbor_deletes + mixed,
    ]


def dead_letter_push() -> dict[str, Any]:
    """One push in namespace dlq, whose receiver always fails: its delivery ends Error."""
    digest = digest_of("dead-letter")
    target = {"mediaType": OCI_MANIFEST, "size": 1, "digest": digest, "repository": "dlq/app", "tag": "v1"}
    return distribution_event("push-dlq", "push", BASE, target)
