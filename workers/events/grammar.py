"""The OCI distribution-spec grammar for names, tags and digests.

Checked at the ingress and the API so that nothing malformed reaches Kafka or Postgres.
Patterns are matched whole (``fullmatch``: ``$`` would accept a trailing newline)
and free of nested quantifiers over overlapping classes, so they run in
linear time on any input.
"""

from __future__ import annotations

import re

_COMPONENT = r"[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*"
REPOSITORY_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")
TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$")
DIGEST = re.compile(r"^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]+$")
# Registered algorithms (OCI image-spec, go-digest) have a fixed length of lower-case hex.
REGISTERED_DIGEST_LENGTHS = {"sha256": 64, "sha384": 96, "sha512": 128}
_LOWER_HEX = re.compile(r"^[a-f0-9]+$")
SHA256_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
MAX_NAME_LENGTH = 255

# Docker Hub's convention: a single-segment repository lives in the "library" namespace.
DEFAULT_NAMESPACE = "library"


def is_repository_name(value: str) -> bool:
    return len(value) <= MAX_NAME_LENGTH and REPOSITORY_NAME.fullmatch(value) is not None


def is_tag(value: str) -> bool:
    return TAG.fullmatch(value) is not None


def is_digest(value: str) -> bool:
    if SHA256_DIGEST.fullmatch(value):  # nearly every digest: one match instead of three steps
        return True
    if not DIGEST.fullmatch(value):
        return False
    algorithm, _, encoded = value.partition(":")
    length = REGISTERED_DIGEST_LENGTHS.get(algorithm)
    return length is None or (len(encoded) == length and _LOWER_HEX.fullmatch(encoded) is not None)


def split_repository(name: str) -> tuple[str, str]:
    """Split a registry repository name into the SWR (namespace, repository) pair."""
    namespace, sep, rest = name.partition("/")
    return (namespace, rest) if sep else (DEFAULT_NAMESPACE, name)


def api_repository(path_value: str) -> str:
    """The repository part of an SWR API path: ``$`` stands for ``/`` (``a$b`` is ``a/b``)."""
    return path_value.replace("$", "/")
