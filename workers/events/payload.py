"""Shared pieces of the payload normalisers: the error they raise and artifact checks."""

from __future__ import annotations

from collections.abc import Sequence
from typing import NoReturn

from pydantic import ValidationError

from workers.events import grammar
from workers.events.model import ArtifactKind

MANIFEST_MEDIA_TYPES = frozenset(
    {
        "application/vnd.docker.distribution.manifest.v1+json",
        "application/vnd.docker.distribution.manifest.v1+prettyjws",
        "application/vnd.docker.distribution.manifest.v2+json",
        "application/vnd.docker.distribution.manifest.list.v2+json",
        "application/vnd.oci.image.manifest.v1+json",
        "application/vnd.oci.image.index.v1+json",
        "application/vnd.oci.artifact.manifest.v1+json",
    }
)


class PayloadError(ValueError):
    """A registry payload is malformed; ``field`` is the JSON path of the first problem."""

    def __init__(self, field: str, message: str):
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def field_path(loc: Sequence[int | str]) -> str:
    path = ""
    for part in loc:
        path += f"[{part}]" if isinstance(part, int) else (f".{part}" if path else str(part))
    return path or "body"


def raise_from_validation(exc: ValidationError, prefix: Sequence[int | str] = ()) -> NoReturn:
    error = exc.errors()[0]
    raise PayloadError(field_path([*prefix, *error["loc"]]), str(error["msg"]).removeprefix("Value error, "))


def check_reference(field: str, name: str, tag: str | None, digest: str | None) -> None:
    """Validate repository name, tag and digest against the OCI grammar."""
    if not grammar.is_repository_name(name):
        raise PayloadError(f"{field}.repository", f"{name!r} is not a valid repository name")
    if tag is not None and not grammar.is_tag(tag):
        raise PayloadError(f"{field}.tag", f"{tag!r} is not a valid tag")
    if digest is not None and not grammar.is_digest(digest):
        raise PayloadError(f"{field}.digest", f"{digest!r} is not a valid digest")


def artifact_kind(media_type: str | None, url: str | None, tag: str | None) -> ArtifactKind:
    """A tagged reference or a manifest media type/URL is a manifest; anything else a blob."""
    if tag or (url and "/manifests/" in url) or (media_type in MANIFEST_MEDIA_TYPES):
        return ArtifactKind.MANIFEST
    return ArtifactKind.BLOB
