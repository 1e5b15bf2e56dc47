"""A small OCI distribution client for tests: push generated images to a real registry.

Speaks the registry HTTP API v2 with aiohttp, optionally with basic auth (Distribution's
htpasswd mode).  Images are real as far as a registry or ``skopeo`` can tell: blobs are uploaded
and verified by digest, the config carries ``created``, ``os``, ``architecture`` and
``rootfs.diff_ids``; only the layer contents are random bytes rather than tar archives.

Every function takes an optional ``session``; without one it opens and closes its own.
They raise :class:`RegistryError` for unexpected HTTP statuses.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal
from urllib.parse import urljoin

import aiohttp

__all__ = [
    "MANIFEST_ACCEPT",
    "MediaTypes",
    "PushedImage",
    "RegistryError",
    "delete_manifest",
    "get_manifest",
    "get_manifest_digest",
    "list_tags",
    "push_blob",
    "push_image",
    "push_index",
    "push_manifest",
    "sha256_digest",
]

Flavor = Literal["oci", "docker"]
Auth = tuple[str, str] | None


@dataclass(frozen=True)
class MediaTypes:
    manifest: str
    index: str
    config: str
    layer: str


OCI = MediaTypes(
    manifest="application/vnd.oci.image.manifest.v1+json",
    index="application/vnd.oci.image.index.v1+json",
    config="application/vnd.oci.image.config.v1+json",
    layer="application/vnd.oci.image.layer.v1.tar",
)
DOCKER = MediaTypes(
    manifest="application/vnd.docker.distribution.manifest.v2+json",
    index="application/vnd.docker.distribution.manifest.list.v2+json",
    config="application/vnd.docker.container.image.v1+json",
    layer="application/vnd.docker.image.rootfs.diff.tar",
)
FLAVORS: Mapping[str, MediaTypes] = {"oci": OCI, "docker": DOCKER}

# Without a matching Accept the registry answers MANIFEST_UNKNOWN for OCI types (or converts).
MANIFEST_ACCEPT = ", ".join([OCI.manifest, OCI.index, DOCKER.manifest, DOCKER.index])


class RegistryError(RuntimeError):
    def __init__(self, method: str, url: str, status: int, body: str):
        super().__init__(f"{method} {url} -> {status}: {body[:500]}")
        self.status = status
        self.body = body


@dataclass(frozen=True)
class PushedImage:
    """What was pushed: the manifest (or index) digest and everything it references."""

    repository: str
    tag: str | None
    digest: str
    size: int
    media_type: str
    manifest: bytes
    layer_digests: tuple[str, ...] = ()
    config_digest: str | None = None
    platform: tuple[str, str] | None = None
    children: tuple[PushedImage, ...] = field(default=())

    @property
    def reference(self) -> str:
        return f"{self.repository}@{self.digest}"


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def _headers(auth: Auth, **extra: str) -> dict[str, str]:
    """Request headers with preemptive basic auth (aiohttp 3.14 deprecates ``auth=`` and ``BasicAuth``)."""
    headers = {key.replace("_", "-"): value for key, value in extra.items()}
    if auth is not None:
        user, password = auth
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
    return headers


@asynccontextmanager
async def _session_scope(session: aiohttp.ClientSession | None) -> AsyncIterator[aiohttp.ClientSession]:
    if session is not None:
        yield session
        return
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as own:
        yield own


async def _expect(resp: aiohttp.ClientResponse, *ok: int) -> None:
    if resp.status not in ok:
        raise RegistryError(resp.method, str(resp.url), resp.status, await resp.text())


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


async def push_blob(
    registry_url: str,
    repository: str,
    data: bytes,
    *,
    auth: Auth = None,
    chunk_size: int | None = None,
    session: aiohttp.ClientSession | None = None,
) -> str:
    """Upload ``data`` unless the repository already has it; returns its digest.

    Monolithic ``POST`` + ``PUT ?digest=``; with ``chunk_size`` smaller than the blob, ``PATCH``
    chunks with ``Content-Range`` and a closing empty ``PUT``.
    """
    digest = sha256_digest(data)
    base = registry_url.rstrip("/")
    async with _session_scope(session) as http:
        async with http.head(f"{base}/v2/{repository}/blobs/{digest}", headers=_headers(auth)) as resp:
            if resp.status == 200:
                return digest
        async with http.post(f"{base}/v2/{repository}/blobs/uploads/", headers=_headers(auth)) as resp:
            await _expect(resp, 202)
            location = urljoin(base + "/", resp.headers["Location"])
        body = data
        if chunk_size is not None and len(data) > chunk_size:
            for start in range(0, len(data), chunk_size):
                chunk = data[start : start + chunk_size]
                headers = _headers(
                    auth, Content_Type="application/octet-stream", Content_Range=f"{start}-{start + len(chunk) - 1}"
                )
                async with http.patch(location, data=chunk, headers=headers) as resp:
                    await _expect(resp, 202)
                    location = urljoin(base + "/", resp.headers["Location"])
            body = b""
        headers = _headers(auth, Content_Type="application/octet-stream")
        async with http.put(_with_digest(location, digest), data=body, headers=headers) as resp:
            await _expect(resp, 201)
    return digest


async def push_manifest(
    registry_url: str,
    repository: str,
    reference: str,
    manifest: bytes,
    media_type: str,
    *,
    auth: Auth = None,
    session: aiohttp.ClientSession | None = None,
) -> str:
    """PUT a manifest under a tag or its digest; returns the digest the registry reports."""
    url = f"{registry_url.rstrip('/')}/v2/{repository}/manifests/{reference}"
    headers = _headers(auth, Content_Type=media_type)
    async with _session_scope(session) as http, http.put(url, data=manifest, headers=headers) as resp:
        await _expect(resp, 201)
        digest = resp.headers.get("Docker-Content-Digest", sha256_digest(manifest))
    if digest != sha256_digest(manifest):
        raise RegistryError("PUT", url, 201, f"registry digest {digest} != local {sha256_digest(manifest)}")
    return digest


def _rfc3339(created: datetime | None) -> str:
    moment = created or datetime.now(UTC)
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _image_config(
    layers: Sequence[bytes], platform: tuple[str, str], created: datetime | None, extra: Mapping[str, Any] | None
) -> dict[str, Any]:
    stamp = _rfc3339(created)
    config: dict[str, Any] = {
        "created": stamp,
        "architecture": platform[1],
        "os": platform[0],
        "config": {"Env": ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"]},
        "rootfs": {"type": "layers", "diff_ids": [sha256_digest(layer) for layer in layers]},
        "history": [{"created": stamp, "created_by": "tests.support.oci"} for _ in layers],
    }
    if platform == ("linux", "arm64"):
        config["variant"] = "v8"
    config.update(extra or {})
    return config


def _materialize(layers: Sequence[bytes] | Sequence[int]) -> list[bytes]:
    return [os.urandom(layer) if isinstance(layer, int) else layer for layer in layers]


def _encode(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":")).encode()


async def push_image(
    registry_url: str,
    repository: str,
    tag: str | None,
    *,
    layers: Sequence[bytes] | Sequence[int] = (1024,),
    config: Mapping[str, Any] | None = None,
    media_type: Flavor = "oci",
    auth: Auth = None,
    created: datetime | None = None,
    platform: tuple[str, str] = ("linux", "amd64"),
    annotations: Mapping[str, str] | None = None,
    chunk_size: int | None = None,
    session: aiohttp.ClientSession | None = None,
) -> PushedImage:
    """Push a single-platform image; ``layers`` are contents or sizes of random contents.

    ``tag=None`` pushes by digest only.  ``config`` entries override the generated config.
    """
    types = FLAVORS[media_type]
    contents = _materialize(layers)
    async with _session_scope(session) as http:
        layer_digests = [
            await push_blob(registry_url, repository, data, auth=auth, chunk_size=chunk_size, session=http)
            for data in contents
        ]
        config_blob = _encode(_image_config(contents, platform, created, config))
        config_digest = await push_blob(registry_url, repository, config_blob, auth=auth, session=http)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": types.manifest,
            "config": {"mediaType": types.config, "digest": config_digest, "size": len(config_blob)},
            "layers": [
                {"mediaType": types.layer, "digest": d, "size": len(data)}
                for d, data in zip(layer_digests, contents, strict=True)
            ],
        }
        if annotations and media_type == "oci":
            manifest["annotations"] = dict(annotations)
        body = _encode(manifest)
        digest = await push_manifest(
            registry_url, repository, tag or sha256_digest(body), body, types.manifest, auth=auth, session=http
        )
    return PushedImage(
        repository=repository, tag=tag, digest=digest, size=len(body), media_type=types.manifest,
        manifest=body, layer_digests=tuple(layer_digests), config_digest=config_digest, platform=platform,
    )  # fmt: skip


async def push_index(
    registry_url: str,
    repository: str,
    tag: str | None,
    platforms: Sequence[tuple[str, str]] = (("linux", "amd64"), ("linux", "arm64")),
    *,
    layers: Sequence[bytes] | Sequence[int] = (1024,),
    media_type: Flavor = "oci",
    auth: Auth = None,
    created: datetime | None = None,
    session: aiohttp.ClientSession | None = None,
) -> PushedImage:
    """Push one image per platform by digest (no tag), then the index under ``tag``."""
    types = FLAVORS[media_type]
    async with _session_scope(session) as http:
        children: list[PushedImage] = []
        for platform in platforms:
            child = await push_image(
                registry_url, repository, None, layers=layers, media_type=media_type, auth=auth,
                created=created, platform=platform, session=http,
            )  # fmt: skip
            children.append(child)
        entries = []
        for child, (os_name, arch) in zip(children, platforms, strict=True):
            plat: dict[str, str] = {"architecture": arch, "os": os_name}
            if (os_name, arch) == ("linux", "arm64"):
                plat["variant"] = "v8"
            entries.append(
                {"mediaType": child.media_type, "digest": child.digest, "size": child.size, "platform": plat}
            )
        body = _encode({"schemaVersion": 2, "mediaType": types.index, "manifests": entries})
        digest = await push_manifest(
            registry_url, repository, tag or sha256_digest(body), body, types.index, auth=auth, session=http
        )
    return PushedImage(
        repository=repository, tag=tag, digest=digest, size=len(body), media_type=types.index,
        manifest=body, children=tuple(children),
    )  # fmt: skip


async def get_manifest(
    registry_url: str,
    repository: str,
    reference: str,
    *,
    auth: Auth = None,
    session: aiohttp.ClientSession | None = None,
) -> tuple[bytes, str, str] | None:
    """GET a manifest by tag or digest: ``(body, media_type, digest)``, or ``None`` when unknown."""
    url = f"{registry_url.rstrip('/')}/v2/{repository}/manifests/{reference}"
    async with (
        _session_scope(session) as http,
        http.get(url, headers=_headers(auth, Accept=MANIFEST_ACCEPT)) as resp,
    ):
        if resp.status == 404:
            return None
        await _expect(resp, 200)
        body = await resp.read()
        return body, resp.headers["Content-Type"], resp.headers.get("Docker-Content-Digest", sha256_digest(body))


async def get_manifest_digest(
    registry_url: str,
    repository: str,
    reference: str,
    auth: Auth = None,
    *,
    session: aiohttp.ClientSession | None = None,
) -> str | None:
    """HEAD a manifest (the registry records a ``pull`` event); its digest, or ``None`` if unknown."""
    url = f"{registry_url.rstrip('/')}/v2/{repository}/manifests/{reference}"
    async with (
        _session_scope(session) as http,
        http.head(url, headers=_headers(auth, Accept=MANIFEST_ACCEPT)) as resp,
    ):
        if resp.status == 404:
            return None
        await _expect(resp, 200)
        return resp.headers["Docker-Content-Digest"]


async def delete_manifest(
    registry_url: str,
    repository: str,
    digest: str,
    auth: Auth = None,
    *,
    session: aiohttp.ClientSession | None = None,
) -> bool:
    """DELETE a manifest by digest (tags are refused by Distribution); ``False`` when unknown.

    Removes every tag pointing at the digest.  Blobs stay until an offline garbage collection.
    """
    url = f"{registry_url.rstrip('/')}/v2/{repository}/manifests/{digest}"
    async with _session_scope(session) as http, http.delete(url, headers=_headers(auth)) as resp:
        if resp.status == 404:
            return False
        await _expect(resp, 202)
        return True


async def list_tags(
    registry_url: str,
    repository: str,
    auth: Auth = None,
    *,
    session: aiohttp.ClientSession | None = None,
) -> list[str]:
    """The repository's tags (empty when the repository is unknown)."""
    url = f"{registry_url.rstrip('/')}/v2/{repository}/tags/list"
    async with _session_scope(session) as http, http.get(url, headers=_headers(auth)) as resp:
        if resp.status == 404:
            return []
        await _expect(resp, 200)
        tags: list[str] = (await resp.json()).get("tags") or []
        return tags
