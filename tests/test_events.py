"""Normalising registry payloads into image events, and the Kafka codec."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from workers.errors import InvalidMessage
from workers.events import distribution, harbor
from workers.events.model import Action, ArtifactKind, decode_event, encode_event
from workers.events.payload import PayloadError

DIGEST = "sha256:" + "ab" * 32
NOW = datetime(2026, 11, 22, 10, 0, tzinfo=UTC)


def dist_event(**target: Any) -> dict[str, Any]:
    base = {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "digest": DIGEST,
        "size": 712,
        "repository": "team/app/api",
        "url": f"http://127.0.0.1:5000/v2/team/app/api/manifests/{DIGEST}",
        "tag": "v1.2.3",
    }
    base.update(target)
    return {
        "id": "7d3b1c9e-0000-4000-8000-000000000001",
        "timestamp": "2026-11-22T10:00:00.123456789Z",
        "action": "push",
        "target": {k: v for k, v in base.items() if v is not None},
        "request": {"method": "PUT"},
        "actor": {"name": "alice"},
    }


def test_distribution_push_becomes_one_image_event() -> None:
    [event] = distribution.normalise_envelope({"events": [dist_event()]}, "region-a")
    assert (event.namespace, event.repository, event.name) == ("team", "app/api", "team/app/api")
    assert (event.action, event.kind, event.tag, event.digest) == (Action.PUSH, ArtifactKind.MANIFEST, "v1.2.3", DIGEST)
    assert event.occurred_at == datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    assert event.actor == "alice" and event.size == 712 and event.region == "region-a"


def test_blob_push_and_tagless_child_manifest() -> None:
    blob = dist_event(mediaType="application/octet-stream", tag=None, url=f"http://r/v2/team/app/blobs/{DIGEST}")
    child = dist_event(tag=None)
    events = distribution.normalise_envelope({"events": [blob, child]}, "region-a")
    assert [e.kind for e in events] == [ArtifactKind.BLOB, ArtifactKind.MANIFEST]
    assert [e.tag for e in events] == [None, None]


def test_single_segment_repository_lives_in_library() -> None:
    [event] = distribution.normalise_envelope({"events": [dist_event(repository="alpine")]}, "region-a")
    assert (event.namespace, event.repository, event.name) == ("library", "alpine", "alpine")


@pytest.mark.parametrize(
    ("mutate", "field"),
    [
        (lambda e: e["target"].update(repository="Team/App"), "events[0].target.repository"),
        (lambda e: e["target"].update(tag="-bad"), "events[0].target.tag"),
        (lambda e: e["target"].update(digest="sha256:xyz"), "events[0].target.digest"),
        (lambda e: e.update(action="teleport"), "events[0].action"),
        (lambda e: e.pop("timestamp"), "events[0].timestamp"),
        (lambda e: e.update(timestamp="yesterday"), "events[0].timestamp"),
        (lambda e: e["target"].update(size="big"), "events[0].target.size"),
        (lambda e: e.pop("target"), "events[0].target"),
        (lambda e: e["target"].update(tag=None, digest=None), "events[0].target.digest"),
    ],
)
def test_bad_distribution_events_name_the_field(mutate: Any, field: str) -> None:
    event = dist_event()
    mutate(event)
    with pytest.raises(PayloadError) as caught:
        distribution.normalise_envelope({"events": [event]}, "region-a")
    assert caught.value.field == field


@pytest.mark.parametrize(("body", "field"), [({}, "events"), ({"events": "x"}, "events"), ([], "body")])
def test_bad_distribution_envelopes(body: Any, field: str) -> None:
    with pytest.raises(PayloadError) as caught:
        distribution.normalise_envelope(body, "region-a")
    assert caught.value.field == field


def harbor_default(kind: str = "PUSH_ARTIFACT") -> dict[str, Any]:
    return {
        "type": kind,
        "occur_at": 1795000000,
        "operator": "admin",
        "event_data": {
            "resources": [{"digest": DIGEST, "tag": "latest", "resource_url": "harbor.local/library/nginx:latest"}],
            "repository": {"name": "nginx", "namespace": "library", "repo_full_name": "library/nginx"},
        },
    }


def test_harbor_default_payload_and_stable_id() -> None:
    [event] = harbor.normalise_payload(harbor_default(), "region-a", NOW)
    assert (event.action, event.namespace, event.repository, event.tag) == (Action.PUSH, "library", "nginx", "latest")
    [again] = harbor.normalise_payload(harbor_default(), "region-a", NOW)
    assert again.id == event.id, "a redelivered Harbor notification must keep its id"


def test_harbor_cloudevent_and_unrelated_types() -> None:
    cloudevent = {
        "specversion": "1.0",
        "id": "ce-1",
        "source": "/projects/1/webhook/policies/1",
        "type": "harbor.artifact.deleted",
        "time": "2026-11-22T10:00:00Z",
        "data": harbor_default()["event_data"],
    }
    [event] = harbor.normalise_payload(cloudevent, "region-a", NOW)
    assert event.action is Action.DELETE and event.id == "ce-1#0"
    assert harbor.normalise_payload(harbor_default("SCANNING_COMPLETED"), "region-a", NOW) == []


def test_bad_harbor_payload_names_the_field() -> None:
    payload = harbor_default()
    payload["event_data"]["resources"][0]["digest"] = "md5:??"
    with pytest.raises(PayloadError) as caught:
        harbor.normalise_payload(payload, "region-a", NOW)
    assert caught.value.field == "event_data.resources[0].digest"


def test_codec_round_trip_and_invalid_messages() -> None:
    [event] = distribution.normalise_envelope({"events": [dist_event()]}, "region-a")
    assert decode_event(encode_event(event)) == event
    for value in (None, b"not json", b"[]", b'{"schema": "other"}', encode_event(event).replace(b"push", b"boom")):
        with pytest.raises(InvalidMessage):
            decode_event(value)
