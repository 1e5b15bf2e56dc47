"""``copy_image``: replicate one image (or multi-platform index) from one registry to another.

Order: resolve the source manifest tree (index → every platform's manifest, by digest) → move all
distinct blobs (``BlobMover``: skip / mount / stream, bounded parallelism, resumable) → PUT the
child manifests by digest, deepest first → PUT the top manifest under the destination tag →
optionally the referrers (signatures, SBOMs) of every manifest copied. A manifest is PUT only
after everything it references is there, so the destination never holds a dangling reference,
and with the raw bytes and media type of the source, so every digest is preserved.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from workers.replication.blobs import BlobMover, BlobTally
from workers.replication.errors import NotFound
from workers.replication.manifests import Manifest, fallback_index
from workers.replication.registry import RegistryClient, fallback_tag
from workers.replication.resume import ResumeStore

CopyStatus = Literal["success", "existed"]


@dataclass(frozen=True)
class CopyProgress:
    """Reported after each blob and each acknowledged chunk; sizes are those the manifests declare."""

    bytes_done: int
    bytes_total: int
    blobs_done: int
    blobs_total: int


@dataclass(frozen=True)
class CopyResult:
    """``existed``: the destination tag pointed elsewhere and ``override`` was off; nothing changed.

    ``digest`` is the source manifest's. ``bytes_transferred`` counts blob bytes the destination
    acknowledged during this call (a resumed upload's earlier part is not counted).
    """

    status: CopyStatus
    digest: str
    bytes_transferred: int = 0
    blobs_copied: int = 0
    blobs_skipped: int = 0
    blobs_mounted: int = 0
    manifests_copied: int = 0
    duration_s: float = 0.0


async def copy_image(
    src: RegistryClient,
    src_repo: str,
    reference: str,
    dst: RegistryClient,
    dst_repo: str,
    dst_tag: str,
    *,
    override: bool,
    include_referrers: bool = False,
    parallelism: int = 4,
    resume: ResumeStore | None = None,
    progress: Callable[[CopyProgress], None] | None = None,
) -> CopyResult:
    """Copy ``src_repo:reference`` (tag or digest) to ``dst_repo:dst_tag``; blocks for the whole copy.

    If the destination tag already holds the same digest, nothing moves (one ``HEAD``) and the
    result is ``success``. ``progress`` is called synchronously and must not block. Raises
    ``NotFound`` (source unknown), ``Unauthorized``, ``DigestMismatch`` (corrupt source),
    ``TransientRegistryError`` (retries exhausted; resumable with the same ``resume`` store).
    """
    started = time.monotonic()
    top = await src.get_manifest(src_repo, reference)
    current = await dst.head_manifest(dst_repo, dst_tag)
    if current == top.digest:
        return CopyResult("success", top.digest, duration_s=time.monotonic() - started)
    if current is not None and not override:
        return CopyResult("existed", top.digest, duration_s=time.monotonic() - started)
    job = _CopyJob(src, src_repo, dst, dst_repo, parallelism=parallelism, resume=resume, progress=progress)
    copied = await job.copy_tree(top, dst_tag)
    if include_referrers:
        await job.copy_referrers(copied)
    tally = job.blobs.tally
    return CopyResult(
        "success", top.digest, bytes_transferred=tally.bytes_transferred, blobs_copied=tally.copied,
        blobs_skipped=tally.skipped, blobs_mounted=tally.mounted, manifests_copied=job.manifests_copied,
        duration_s=time.monotonic() - started,
    )  # fmt: skip


class _CopyJob:
    def __init__(
        self,
        src: RegistryClient,
        src_repo: str,
        dst: RegistryClient,
        dst_repo: str,
        *,
        parallelism: int,
        resume: ResumeStore | None,
        progress: Callable[[CopyProgress], None] | None,
    ):
        self.src, self.src_repo, self.dst, self.dst_repo = src, src_repo, dst, dst_repo
        self._progress = progress
        self.blobs = BlobMover(src, src_repo, dst, dst_repo, parallelism=parallelism, resume=resume,
                               on_change=self._report)  # fmt: skip
        self.manifests_copied = 0

    def _report(self, tally: BlobTally) -> None:
        if self._progress is not None:
            done = min(tally.bytes_done, tally.bytes_total)  # a restarted upload counts its bytes twice
            self._progress(CopyProgress(done, tally.bytes_total, tally.blobs_done, tally.blobs_total))

    async def copy_tree(self, top: Manifest, tag: str | None) -> list[Manifest]:
        """Copy a manifest and all it references; returns the manifests, children first."""
        tree = await self._resolve(top)
        await self.blobs.move_all([blob for manifest in tree for blob in manifest.blobs()])
        for child in tree[:-1]:
            await self._put(child, child.digest)
        await self._put(top, tag or top.digest)
        return tree

    async def _resolve(self, manifest: Manifest) -> list[Manifest]:
        """The tree below ``manifest`` in post-order (every platform, nested indexes included)."""
        children = await asyncio.gather(
            *(self.src.get_manifest(self.src_repo, child.digest) for child in manifest.children())
        )
        subtrees = await asyncio.gather(*(self._resolve(child) for child in children))
        return [m for subtree in subtrees for m in subtree] + [manifest]

    async def _put(self, manifest: Manifest, reference: str) -> None:
        await self.dst.put_manifest(self.dst_repo, reference, manifest)
        self.manifests_copied += 1

    async def copy_referrers(self, subjects: list[Manifest]) -> None:
        """Copy what refers to each subject (one level), then keep the destination's listing current.

        A destination without the referrers API gets the tag-schema fallback index updated.
        """
        for subject in subjects:
            referrers, _ = await self.src.get_referrers(self.src_repo, subject.digest)
            if not referrers:
                continue
            for descriptor in referrers:
                await self.copy_tree(await self.src.get_manifest(self.src_repo, descriptor.digest), None)
            _, via_api = await self.dst.get_referrers(self.dst_repo, subject.digest)
            if via_api:
                continue
            try:
                existing: Manifest | None = await self.dst.get_manifest(self.dst_repo, fallback_tag(subject.digest))
            except NotFound:
                existing = None
            merged = fallback_index(existing, referrers)
            if merged is not None:
                await self._put(merged, fallback_tag(subject.digest))
