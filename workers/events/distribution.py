"""Normalise CNCF Distribution notification envelopes into image events.

Called by the ingress for ``POST /events/distribution``. Pure: raises ``PayloadError`` naming
the first bad field; never performs I/O. ``mount`` (a cross-repository blob mount) counts as a
blob push; ``pull`` carries the request method (a ``HEAD`` is still a pull).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from workers.events import grammar
from workers.events.model import Action, ArtifactKind, ImageEvent, Source
from workers.events.payload import PayloadError, artifact_kind, check_reference, raise_from_validation

MEDIA_TYPE = "application/vnd.docker.distribution.events.v1+json"
MAX_SIZE = 2**63 - 1  # the inventory's BIGINT; larger sizes are no real blob

_ACTIONS = {"push": Action.PUSH, "mount": Action.PUSH, "pull": Action.PULL, "delete": Action.DELETE}


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class _Target(_Lenient):
    repository: str = Field(min_length=1)
    digest: str | None = None
    tag: str | None = None
    media_type: str | None = Field(default=None, alias="mediaType")
    size: int | None = Field(default=None, ge=0, le=MAX_SIZE)
    length: int | None = Field(default=None, ge=0, le=MAX_SIZE)
    url: str | None = None


class _Actor(_Lenient):
    name: str | None = None


class _Event(_Lenient):
    id: str = Field(min_length=1, max_length=256)
    timestamp: datetime
    action: str
    target: _Target
    actor: _Actor | None = None


class _Envelope(_Lenient):
    events: list[dict[str, Any]]


def normalise_envelope(body: Any, region: str) -> list[ImageEvent]:
    """Every event of one envelope, in order. Raises ``PayloadError``."""
    try:
        envelope = _Envelope.model_validate(body)
    except ValidationError as exc:
        raise_from_validation(exc)
    return [_normalise_event(raw, index, region) for index, raw in enumerate(envelope.events)]


def _normalise_event(raw: dict[str, Any], index: int, region: str) -> ImageEvent:
    try:
        event = _Event.model_validate(raw)
    except ValidationError as exc:
        raise_from_validation(exc, ("events", index))
    field = f"events[{index}]"
    action = _ACTIONS.get(event.action)
    if action is None:
        raise PayloadError(f"{field}.action", f"unknown action {event.action!r} (push, pull, delete, mount)")
    target = event.target
    check_reference(f"{field}.target", target.repository, target.tag or None, target.digest or None)
    if not target.digest and not target.tag:
        raise PayloadError(f"{field}.target.digest", "a digest or a tag is required")
    namespace, repository = grammar.split_repository(target.repository)
    return ImageEvent(
        id=event.id,
        source=Source.DISTRIBUTION,
        region=region,
        action=action,
        kind=_kind(action, target),
        name=target.repository,
        namespace=namespace,
        repository=repository,
        tag=target.tag or None,
        digest=target.digest or None,
        media_type=target.media_type or None,
        size=target.size if target.size is not None else target.length,
        occurred_at=_utc(event.timestamp, f"{field}.timestamp"),
        actor=(event.actor.name or None) if event.actor else None,
    )


def _kind(action: Action, target: _Target) -> ArtifactKind:
    # A delete by digest carries only {digest, repository}; clients delete manifests, and the
    # registry reclaims blobs itself, so an unlabelled delete is a manifest delete.
    if action is Action.DELETE and not target.media_type and not target.url:
        return ArtifactKind.MANIFEST
    return artifact_kind(target.media_type, target.url, target.tag)


def _utc(value: datetime, field: str) -> datetime:
    try:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+14:00 is a time before year 1 in UTC
        raise PayloadError(field, f"{value.isoformat()} is out of range in UTC") from None
