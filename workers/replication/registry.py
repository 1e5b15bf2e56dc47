"""``RegistryClient``: the OCI distribution API of one registry, as the copy engine needs it.

Manifests are fetched and stored as raw bytes with their media type (never re-encoded). Blobs
stream: ``get_blob`` yields chunks as they arrive and ``upload_blob`` sends them on, so no blob is
ever held whole (a chunked upload holds at most two chunks). Every method may block on the
network; errors follow ``workers.replication.errors``: transient ones are retried here (per
request; per blob for uploads) before they are raised.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from types import TracebackType
from typing import Any, Self

import aiohttp

from workers.config import RegionSettings
from workers.replication import uploads
from workers.replication.errors import (
    DigestMismatch,
    NotFound,
    RegistryError,
    RetryPolicy,
    TransientRegistryError,
    Unauthorized,
)
from workers.replication.manifests import (
    MANIFEST_ACCEPT,
    OCI_INDEX,
    Descriptor,
    Manifest,
    media_type_of,
    verify_manifest,
)
from workers.replication.transport import DEFAULT_TIMEOUT, Transport
from workers.replication.uploads import OnChunk, OnProgress, OpenSource, UploadState, UploadTuning, push_scope

__all__ = [
    "DigestMismatch",
    "Manifest",
    "NotFound",
    "RegistryClient",
    "RegistryError",
    "TransientRegistryError",
    "Unauthorized",
    "UploadState",
    "UploadTuning",
]

READ_SIZE = 256 * 1024
_NEXT_LINK = re.compile(r'<([^>]+)>\s*;\s*rel="?next"?')


def pull_scope(repo: str) -> str:
    return f"repository:{repo}:pull"


class RegistryClient:
    """One registry (``base_url`` such as ``https://swr.example.com``), with optional credentials.

    ``max_connections`` caps concurrent requests to this registry across every copy using the
    client. Use as ``async with RegistryClient(...) as client`` or call :meth:`close`.
    """

    def __init__(
        self,
        base_url: str,
        *,
        username: str | None = None,
        password: str | None = None,
        insecure: bool = False,
        session: aiohttp.ClientSession | None = None,
        max_connections: int = 8,
        retry: RetryPolicy | None = None,
        tuning: UploadTuning | None = None,
        timeout: aiohttp.ClientTimeout = DEFAULT_TIMEOUT,
    ):
        self.transport = Transport(
            base_url, username=username, password=password, insecure=insecure, session=session,
            max_connections=max_connections, retry=retry, timeout=timeout,
        )  # fmt: skip
        self.tuning = tuning or UploadTuning()
        # (repository, digest) → the upload of that blob by some job now running: a second job
        # copying the same layer waits for it instead of sending the same bytes again
        self.uploads_in_flight: dict[tuple[str, str], asyncio.Future[None]] = {}

    @classmethod
    def from_settings(cls, region: RegionSettings, **options: Any) -> RegistryClient:
        return cls(region.registry, username=region.username, password=region.password, insecure=region.insecure,
                   **options)  # fmt: skip

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    @property
    def max_connections(self) -> int:
        return self.transport.max_connections

    async def close(self) -> None:
        await self.transport.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:  # fmt: skip
        await self.close()

    # ----------------------------------------------------------------------------------- manifests

    async def get_manifest(self, repo: str, reference: str) -> Manifest:
        """GET a manifest by tag or digest; its digest is checked. Raises ``NotFound``."""
        t = self.transport
        reply = await t.call("GET", t.url(f"/v2/{repo}/manifests/{reference}"), scope=pull_scope(repo),
                             headers={"Accept": MANIFEST_ACCEPT}, what=f"manifest {repo}:{reference}")  # fmt: skip
        expected = reference if ":" in reference else reply.headers.get("Docker-Content-Digest")
        digest = verify_manifest(reply.body, expected)
        return Manifest(media_type_of(reply.body, reply.headers.get("Content-Type")), digest, reply.body)

    async def head_manifest(self, repo: str, reference: str) -> str | None:
        """The digest a tag (or digest) points at, ``None`` when unknown."""
        t = self.transport
        try:
            reply = await t.call("HEAD", t.url(f"/v2/{repo}/manifests/{reference}"), scope=pull_scope(repo),
                                 headers={"Accept": MANIFEST_ACCEPT}, what=f"HEAD {repo}:{reference}")  # fmt: skip
        except NotFound:
            return None
        digest = reply.headers.get("Docker-Content-Digest")
        return digest if digest else (await self.get_manifest(repo, reference)).digest

    async def put_manifest(self, repo: str, reference: str, manifest: Manifest) -> str:
        """PUT the raw bytes under a tag or their digest; returns the digest (checked to be unchanged)."""
        t = self.transport
        reply = await t.call("PUT", t.url(f"/v2/{repo}/manifests/{reference}"), scope=push_scope(repo), ok=(201,),
                             headers={"Content-Type": manifest.media_type}, data=manifest.raw,
                             what=f"put manifest {repo}:{reference}")  # fmt: skip
        stored = reply.headers.get("Docker-Content-Digest", manifest.digest)
        if stored != manifest.digest:
            raise RegistryError(201, "DIGEST_INVALID", f"{repo}:{reference} stored as {stored}, not {manifest.digest}")
        return stored

    async def delete_manifest(self, repo: str, digest: str) -> bool:
        """DELETE by digest (removes every tag on it); ``False`` when it was not there."""
        t = self.transport
        try:
            await t.call("DELETE", t.url(f"/v2/{repo}/manifests/{digest}"), scope=f"repository:{repo}:delete",
                         ok=(202, 200), what=f"delete {repo}@{digest}")  # fmt: skip
        except NotFound:
            return False
        return True

    async def list_tags(self, repo: str, page_size: int = 1000) -> list[str]:
        """Every tag of ``repo``, following ``Link`` pagination. Raises ``NotFound`` for an unknown repo."""
        pages = self._pages(f"/v2/{repo}/tags/list?n={page_size}", pull_scope(repo), "tags")
        return [tag async for tag in pages]

    async def catalog(self, page_size: int = 1000) -> list[str]:
        """Every repository name, following ``Link`` pagination."""
        return [name async for name in self._pages(f"/v2/_catalog?n={page_size}", "registry:catalog:*", "repositories")]

    async def _pages(self, path: str, scope: str, key: str) -> AsyncIterator[str]:
        url: str | None = self.transport.url(path)
        while url is not None:
            reply = await self.transport.call("GET", url, scope=scope, what=f"list {key}")
            for name in _json(reply.body).get(key) or []:
                yield str(name)
            found = _NEXT_LINK.search(reply.headers.get("Link", ""))
            url = self.transport.url(found.group(1)) if found else None

    async def get_referrers(self, repo: str, digest: str) -> tuple[list[Descriptor], bool]:
        """Manifests whose ``subject`` is ``digest``, and whether the referrers API answered.

        Tries ``GET /v2/<repo>/referrers/<digest>``; on 404 (no API, e.g. Distribution 2.8) reads the
        tag-schema fallback index ``sha256-<hex>``. ``([], False)`` when neither exists.
        """
        t = self.transport
        try:
            reply = await t.call("GET", t.url(f"/v2/{repo}/referrers/{digest}"), scope=pull_scope(repo),
                                 headers={"Accept": OCI_INDEX}, what=f"referrers of {repo}@{digest}")  # fmt: skip
            return [Descriptor.parse(d) for d in _json(reply.body).get("manifests") or []], True
        except NotFound:
            pass
        try:
            index = await self.get_manifest(repo, fallback_tag(digest))
        except NotFound:
            return [], False
        return index.children(), False

    # ----------------------------------------------------------------------------------- blobs

    async def blob_exists(self, repo: str, digest: str) -> bool:
        return await uploads.blob_present(self.transport, repo, digest)

    async def mount_blob(self, dst_repo: str, digest: str, from_repo: str) -> bool:
        """Cross-repository mount within this registry: ``True`` when mounted (201).

        On 202 the registry opened an upload session instead; it is cancelled and ``False`` returned.
        """
        t = self.transport
        scope = f"{push_scope(dst_repo)} {pull_scope(from_repo)}"
        reply = await t.call("POST", t.url(f"/v2/{dst_repo}/blobs/uploads/?mount={digest}&from={from_repo}"),
                             scope=scope, ok=(201, 202), what=f"mount {digest} from {from_repo}")  # fmt: skip
        if reply.status == 201:
            return True
        if "Location" in reply.headers:
            await uploads.cancel_upload(t, dst_repo, UploadState(t.url(reply.headers["Location"]), 0))
        return False

    async def get_blob(self, repo: str, digest: str, *, offset: int = 0) -> AsyncIterator[bytes]:
        """Stream a blob from ``offset`` (a ``Range`` request; bytes skipped if Range is ignored).

        Raises ``NotFound``; a failure mid-stream raises ``TransientRegistryError`` to the reader.
        """
        t = self.transport
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        async with t.stream("GET", t.url(f"/v2/{repo}/blobs/{digest}"), scope=pull_scope(repo), ok=(200, 206, 416),
                            headers=headers, what=f"blob {repo}@{digest}") as resp:  # fmt: skip
            if resp.status == 416:
                return  # offset is the blob's size: nothing left
            skip = offset if resp.status == 200 else 0
            async for piece in resp.content.iter_chunked(READ_SIZE):
                if skip >= len(piece):
                    skip -= len(piece)
                    continue
                yield piece[skip:] if skip else piece
                skip = 0

    async def upload_blob(
        self,
        repo: str,
        digest: str,
        size: int,
        chunks: AsyncIterator[bytes] | OpenSource,
        *,
        resume: UploadState | None = None,
        on_chunk: OnChunk | None = None,
        on_progress: OnProgress | None = None,
    ) -> int:
        """Upload a blob (see ``workers.replication.uploads``); returns the bytes acknowledged.

        ``chunks`` is either the blob's bytes or ``open(offset)`` returning them from ``offset``;
        only the latter can be resumed and retried (a plain stream gets one attempt and has the
        resumed prefix skipped). ``on_chunk`` receives each acknowledged ``UploadState`` to persist.
        Raises ``DigestMismatch``, ``TransientRegistryError`` (retries exhausted), ``RegistryError``.
        """
        if callable(chunks):
            opener: OpenSource = chunks
            return await uploads.upload_blob(self.transport, self.tuning, repo, digest, size, opener,
                                             resume=resume, on_chunk=on_chunk, on_progress=on_progress)  # fmt: skip
        stream = chunks
        opened = False

        def once(offset: int) -> AsyncIterator[bytes]:
            nonlocal opened
            if opened:
                raise RegistryError(None, None, f"upload of {digest} failed and its source stream cannot be reread")
            opened = True
            return _skip(stream, offset)

        return await uploads.upload_blob(self.transport, self.tuning, repo, digest, size, once,
                                         resume=resume, on_chunk=on_chunk, on_progress=on_progress)  # fmt: skip


def fallback_tag(digest: str) -> str:
    """The referrers tag schema: ``sha256:abc…`` → ``sha256-abc…`` (at most 128 characters)."""
    return digest.replace(":", "-", 1)[:128]


def _json(body: bytes) -> dict[str, Any]:
    import json

    try:
        document = json.loads(body)
    except ValueError as exc:
        raise RegistryError(200, None, f"expected JSON: {exc}") from None
    return document if isinstance(document, dict) else {}


async def _skip(pieces: AsyncIterator[bytes], count: int) -> AsyncIterator[bytes]:
    async for piece in pieces:
        if count >= len(piece):
            count -= len(piece)
            continue
        yield piece[count:] if count else piece
        count = 0
