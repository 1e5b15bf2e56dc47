"""Manifests as data: media types, descriptors, what a manifest references.  No I/O.

The copy engine never re-encodes a manifest: it keeps the raw bytes it fetched and PUTs them with
the original media type, so the digest on the destination is the digest on the source.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

from workers.replication.errors import DigestMismatch, RegistryError

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_TYPES = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEX_TYPES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
# Without a matching Accept, Distribution answers MANIFEST_UNKNOWN for OCI types.
MANIFEST_ACCEPT = ", ".join([OCI_MANIFEST, OCI_INDEX, DOCKER_MANIFEST, DOCKER_MANIFEST_LIST])
# Layers a registry must not serve (Windows base layers); they stay where their ``urls`` point.
NONDISTRIBUTABLE_MARKERS = ("foreign", "nondistributable")


@dataclass(frozen=True)
class Descriptor:
    """A content descriptor; ``document`` keeps every field (platform, annotations, artifactType)."""

    media_type: str
    digest: str
    size: int
    urls: tuple[str, ...] = ()
    document: Mapping[str, Any] = field(default_factory=dict, compare=False)

    @classmethod
    def parse(cls, value: Any) -> Descriptor:
        if not isinstance(value, dict) or not isinstance(value.get("digest"), str):
            raise RegistryError(None, "MANIFEST_INVALID", f"bad descriptor {value!r:.200}")
        size = value.get("size", 0)
        if not isinstance(size, int) or size < 0:
            raise RegistryError(None, "MANIFEST_INVALID", f"bad size in descriptor {value['digest']}")
        return cls(str(value.get("mediaType", "")), value["digest"], size, tuple(value.get("urls") or ()), value)

    @property
    def distributable(self) -> bool:
        return not (self.urls and any(marker in self.media_type for marker in NONDISTRIBUTABLE_MARKERS))


@dataclass(frozen=True)
class Manifest:
    """A manifest exactly as the registry served it."""

    media_type: str
    digest: str
    raw: bytes

    @cached_property
    def document(self) -> dict[str, Any]:
        try:
            document = json.loads(self.raw)
        except ValueError as exc:
            raise RegistryError(None, "MANIFEST_INVALID", f"{self.digest} is not JSON: {exc}") from None
        if not isinstance(document, dict):
            raise RegistryError(None, "MANIFEST_INVALID", f"{self.digest} is not a JSON object")
        return document

    @property
    def is_index(self) -> bool:
        return self.media_type in INDEX_TYPES

    def children(self) -> list[Descriptor]:
        """The manifests an index lists (every platform); empty for an image manifest."""
        if not self.is_index:
            return []
        return [Descriptor.parse(entry) for entry in self.document.get("manifests") or []]

    def blobs(self) -> list[Descriptor]:
        """Config and layers an image manifest needs on the registry; empty for an index."""
        if self.is_index:
            return []
        if self.media_type not in IMAGE_TYPES:
            raise RegistryError(None, "MANIFEST_UNSUPPORTED", f"cannot copy {self.media_type or 'untyped'} manifest")
        found = [Descriptor.parse(self.document.get("config"))]
        found += [Descriptor.parse(layer) for layer in self.document.get("layers") or []]
        return [d for d in found if d.distributable]

    def subject(self) -> Descriptor | None:
        value = self.document.get("subject")
        return Descriptor.parse(value) if value is not None else None


def media_type_of(raw: bytes, content_type: str | None) -> str:
    """The manifest's media type: the ``Content-Type`` served, else its ``mediaType`` field."""
    served = (content_type or "").split(";")[0].strip()
    if served and served not in ("application/json", "application/octet-stream", "text/plain"):
        return served
    try:
        value = json.loads(raw).get("mediaType")
    except (ValueError, AttributeError):
        value = None
    return value if isinstance(value, str) else served


def compute_digest(data: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, data).hexdigest()}"


def hasher_for(digest: str) -> Any:
    """A fresh ``hashlib`` object for the digest's algorithm (``sha256``/``sha512``)."""
    algorithm, _, hex_value = digest.partition(":")
    if algorithm not in ("sha256", "sha512") or not hex_value:
        raise RegistryError(None, "DIGEST_INVALID", f"unsupported digest {digest!r}")
    return hashlib.new(algorithm)


def verify_manifest(raw: bytes, expected: str | None) -> str:
    """The digest of ``raw``; raises ``DigestMismatch`` when it differs from ``expected``."""
    algorithm = expected.partition(":")[0] if expected and expected.startswith("sha512:") else "sha256"
    actual = compute_digest(raw, algorithm)
    if expected is not None and actual != expected:
        raise DigestMismatch(f"manifest hashes to {actual}, expected {expected}")
    return actual


def is_digest(reference: str) -> bool:
    return ":" in reference


def dedupe(descriptors: Sequence[Descriptor]) -> dict[str, Descriptor]:
    """First descriptor per digest, order kept."""
    unique: dict[str, Descriptor] = {}
    for descriptor in descriptors:
        unique.setdefault(descriptor.digest, descriptor)
    return unique


def fallback_index(existing: Manifest | None, additions: Sequence[Descriptor]) -> Manifest | None:
    """The referrers tag-schema index with ``additions`` merged in; ``None`` when nothing is new."""
    document: dict[str, Any] = dict(existing.document) if existing is not None else {}
    entries = list(document.get("manifests") or [])
    known = {entry.get("digest") for entry in entries if isinstance(entry, dict)}
    new = [dict(d.document) for d in additions if d.digest not in known]
    if not new:
        return None
    document.update(schemaVersion=2, mediaType=OCI_INDEX, manifests=entries + new)
    raw = json.dumps(document, separators=(",", ":")).encode()
    return Manifest(OCI_INDEX, compute_digest(raw), raw)
