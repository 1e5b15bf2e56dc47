"""Normalise Harbor webhook payloads (default JSON and CloudEvents 1.0) into image events.

Called by the ingress for ``POST /events/harbor``. Pure; raises ``PayloadError`` naming the
first bad field. Harbor event types other than artifact push/pull/delete (scans, quota,
replication, ...) are valid payloads that carry no image event: they yield an empty list.

Harbor's default payload has no event id, so one is derived from its content: a redelivery of
the same notification gets the same id and is recognised as a duplicate downstream.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workers.events import grammar
from workers.events.model import Action, ArtifactKind, ImageEvent, Source
from workers.events.payload import PayloadError, check_reference, raise_from_validation

DEFAULT_TYPES = {"PUSH_ARTIFACT": Action.PUSH, "PULL_ARTIFACT": Action.PULL, "DELETE_ARTIFACT": Action.DELETE}
CLOUDEVENT_TYPES = {
    "harbor.artifact.pushed": Action.PUSH,
    "harbor.artifact.pulled": Action.PULL,
    "harbor.artifact.deleted": Action.DELETE,
}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="allow")


class _Resource(_Lenient):
    digest: str | None = None
    tag: str | None = None
    resource_url: str | None = None


class _Repository(_Lenient):
    name: str = Field(min_length=1)
    namespace: str = Field(min_length=1)
    repo_full_name: str | None = None


class _EventData(_Lenient):
    resources: list[_Resource] = Field(default_factory=list)
    repository: _Repository


class _DefaultPayload(_Lenient):
    type: str = Field(min_length=1)
    occur_at: int | float
    operator: str | None = None
    event_data: dict[str, Any] | None = None


class _CloudEvent(_Lenient):
    specversion: str
    id: str = Field(min_length=1, max_length=256)
    type: str = Field(min_length=1)
    source: str = Field(min_length=1)
    time: datetime | None = None
    data: dict[str, Any] | None = None
    operator: str | None = None


def is_cloudevent(body: Any) -> bool:
    return isinstance(body, dict) and "specversion" in body


def normalise_payload(body: Any, region: str, received_at: datetime) -> list[ImageEvent]:
    """Image events carried by one Harbor payload, in resource order. Raises ``PayloadError``."""
    if is_cloudevent(body):
        return _normalise_cloudevent(body, region, received_at)
    try:
        payload = _DefaultPayload.model_validate(body)
    except ValidationError as exc:
        raise_from_validation(exc)
    action = DEFAULT_TYPES.get(payload.type)
    if action is None or payload.event_data is None:
        return []
    try:
        occurred_at = datetime.fromtimestamp(payload.occur_at, UTC)
    except (OverflowError, OSError, ValueError):
        raise PayloadError("occur_at", f"{payload.occur_at!r} is not a valid Unix time") from None
    seed = f"{payload.type}|{payload.occur_at}|{payload.operator}"
    return _events(payload.event_data, "event_data", action, region, occurred_at, payload.operator, seed, None)


def _normalise_cloudevent(body: Any, region: str, received_at: datetime) -> list[ImageEvent]:
    try:
        event = _CloudEvent.model_validate(body)
    except ValidationError as exc:
        raise_from_validation(exc)
    if event.specversion != "1.0":
        raise PayloadError("specversion", f"unsupported CloudEvents version {event.specversion!r} (1.0)")
    action = CLOUDEVENT_TYPES.get(event.type)
    if action is None or event.data is None:
        return []
    occurred_at = _utc(event.time, "time") if event.time else received_at
    return _events(event.data, "data", action, region, occurred_at, event.operator, event.id, event.id)


def _events(
    raw: dict[str, Any],
    field: str,
    action: Action,
    region: str,
    occurred_at: datetime,
    operator: str | None,
    seed: str,
    event_id: str | None,
) -> list[ImageEvent]:
    try:
        data = _EventData.model_validate(raw)
    except ValidationError as exc:
        raise_from_validation(exc, (field,))
    name = data.repository.repo_full_name or f"{data.repository.namespace}/{data.repository.name}"
    namespace, repository = grammar.split_repository(name)
    events = []
    for index, resource in enumerate(data.resources):
        where = f"{field}.resources[{index}]"
        tag = _tag_of(resource)
        check_reference(where, name, tag, resource.digest or None)
        if not resource.digest and not tag:
            raise PayloadError(f"{where}.digest", "a digest or a tag is required")
        identity = f"{seed}|{name}|{resource.digest}|{resource.tag}"
        ident = f"{event_id}#{index}" if event_id else "harbor-" + hashlib.sha256(identity.encode()).hexdigest()[:32]
        events.append(
            ImageEvent(
                id=ident,
                source=Source.HARBOR,
                region=region,
                action=action,
                kind=ArtifactKind.MANIFEST,  # Harbor reports artifacts, never blobs
                name=name,
                namespace=namespace,
                repository=repository,
                tag=tag,
                digest=resource.digest or None,
                media_type=None,
                size=None,
                occurred_at=occurred_at,
                actor=operator or None,
            )
        )
    return events


def _tag_of(resource: _Resource) -> str | None:
    """Harbor puts the digest in ``tag`` for an untagged artifact: that is no tag."""
    tag = resource.tag or None
    if tag is not None and tag == resource.digest:
        return None
    return tag


def _utc(value: datetime, field: str) -> datetime:
    # RFC 3339 requires an offset; a time without one is taken as UTC, never as local time.
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is a time before year 1 in UTC
        raise PayloadError(field, f"{value.isoformat()} is out of range in UTC") from None
