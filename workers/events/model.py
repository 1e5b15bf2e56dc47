"""The one internal image event every registry payload is normalised into.

Contract: ``schemas/image-events.v1.schema.json`` (examples under
``schemas/examples/image-events/1/``). Encoded as JSON on the image-events topic, keyed by the
full repository name so that every event of one repository lands on one partition, in order.
"""

from __future__ import annotations

import functools
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

import orjson

from workers.errors import InvalidMessage
from workers.events import grammar

SCHEMA = "image-events.v1"


class Action(StrEnum):
    PUSH = "push"
    DELETE = "delete"
    PULL = "pull"


class ArtifactKind(StrEnum):
    """What the event's digest names: an image manifest (or index) or a blob (layer, config)."""

    MANIFEST = "manifest"
    BLOB = "blob"


class Source(StrEnum):
    DISTRIBUTION = "distribution"
    HARBOR = "harbor"


class ImageEvent(NamedTuple):
    """A push, delete or pull of one artifact in one repository of one region's registry.

    Immutable. A named tuple rather than a frozen dataclass because every worker builds one per
    message: a frozen dataclass's ``__init__`` costs four times as much.
    """

    id: str
    source: Source
    region: str
    action: Action
    kind: ArtifactKind
    name: str  # the repository name in the registry, e.g. "team/app/api"
    namespace: str  # SWR namespace: first segment of name
    repository: str  # SWR repository: the rest of name
    tag: str | None
    digest: str | None
    media_type: str | None
    size: int | None
    occurred_at: datetime
    actor: str | None

    @property
    def key(self) -> bytes:
        """Kafka key: the full repository name, for per-repository order."""
        return self.name.encode()

    def to_document(self) -> dict[str, Any]:
        return {
            "schema": SCHEMA,
            "id": self.id,
            "source": self.source.value,
            "region": self.region,
            "action": self.action.value,
            "kind": self.kind.value,
            "name": self.name,
            "namespace": self.namespace,
            "repository": self.repository,
            "tag": self.tag,
            "digest": self.digest,
            "media_type": self.media_type,
            "size": self.size,
            "occurred_at": self.occurred_at.astimezone(UTC).isoformat().replace("+00:00", "Z"),
            "actor": self.actor,
        }


def encode_event(event: ImageEvent) -> bytes:
    return orjson.dumps(event.to_document())


def decode_event(value: bytes | None) -> ImageEvent:
    """Decode one topic message. Raises ``InvalidMessage`` naming what is wrong."""
    if value is None:
        raise InvalidMessage("empty message value")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError as exc:
        raise InvalidMessage(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise InvalidMessage("expected a JSON object")
    if doc.get("schema") != SCHEMA:
        raise InvalidMessage(f"schema: expected {SCHEMA!r}, got {doc.get('schema')!r}")
    try:
        return _from_document(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise InvalidMessage(f"invalid image event: {exc}") from None


def _from_document(doc: dict[str, Any]) -> ImageEvent:
    # The hot path of every worker: a few microseconds per event. Names and tags repeat across
    # events, so their grammar checks are cached; enums are looked up by value in a dict.
    name = _string(doc, "name")
    namespace, repository = _checked_name(name)
    tag, digest = _optional_string(doc, "tag"), _optional_string(doc, "digest")
    if tag is not None and not _is_tag(tag):
        raise ValueError(f"tag: {tag!r} is not a valid tag")
    if digest is not None and not grammar.is_digest(digest):
        raise ValueError(f"digest: {digest!r} is not a valid digest")
    size = doc.get("size")
    if size is not None and (type(size) is not int or size < 0):
        raise ValueError("size: expected a non-negative integer")
    occurred_at = datetime.fromisoformat(_string(doc, "occurred_at"))
    if occurred_at.tzinfo is None:
        raise ValueError("occurred_at: expected a timezone")
    return ImageEvent(
        id=_string(doc, "id"),
        source=_member(_SOURCES, doc, "source"),
        region=_string(doc, "region"),
        action=_member(_ACTIONS, doc, "action"),
        kind=_member(_KINDS, doc, "kind"),
        name=name,
        namespace=namespace,
        repository=repository,
        tag=tag,
        digest=digest,
        media_type=_optional_string(doc, "media_type"),
        size=size,
        occurred_at=occurred_at if occurred_at.tzinfo is UTC else occurred_at.astimezone(UTC),
        actor=_optional_string(doc, "actor"),
    )


_SOURCES = {member.value: member for member in Source}
_ACTIONS = {member.value: member for member in Action}
_KINDS = {member.value: member for member in ArtifactKind}
_E = TypeVar("_E", bound=StrEnum)


@functools.lru_cache(maxsize=8192)
def _checked_name(name: str) -> tuple[str, str]:
    if not grammar.is_repository_name(name):
        raise ValueError(f"name: {name!r} is not a valid repository name")
    return grammar.split_repository(name)


@functools.lru_cache(maxsize=8192)
def _is_tag(tag: str) -> bool:
    return grammar.is_tag(tag)


def _member(members: dict[str, _E], doc: dict[str, Any], key: str) -> _E:
    value = _string(doc, key)
    try:
        return members[value]
    except KeyError:
        raise ValueError(f"{key}: {value!r} is not one of {', '.join(members)}") from None


def _string(doc: dict[str, Any], key: str) -> str:
    value = doc[key]
    if type(value) is not str or not value:
        raise ValueError(f"{key}: expected a non-empty string")
    return value


def _optional_string(doc: dict[str, Any], key: str) -> str | None:
    value = doc.get(key)
    if value is None:
        return None
    if type(value) is not str:
        raise ValueError(f"{key}: expected a string or null")
    return value or None
