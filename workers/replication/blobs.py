"""Moving one image's blobs to the destination: skip, mount, or stream — each at most once.

For every blob: present on the destination (``HEAD``) → skipped; same registry as the source →
cross-repository mount; otherwise streamed from the source into a (resumable) upload. Never
re-compressed: the bytes, and therefore the digest, are the source's. At most ``parallelism``
blobs move at once for this job; the clients' slots bound each registry across jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from workers.replication.manifests import Descriptor
from workers.replication.registry import RegistryClient
from workers.replication.resume import ResumeKey, ResumeStore
from workers.replication.uploads import UploadState


@dataclass
class BlobTally:
    """What happened to the blobs of one copy, and how far it got (for progress reports)."""

    bytes_total: int = 0
    bytes_done: int = 0
    bytes_transferred: int = 0
    blobs_total: int = 0
    blobs_done: int = 0
    copied: int = 0
    skipped: int = 0
    mounted: int = 0


class BlobMover:
    """Brings blobs from ``src_repo`` on ``src`` to ``dst_repo`` on ``dst`` for one copy job."""

    def __init__(
        self,
        src: RegistryClient,
        src_repo: str,
        dst: RegistryClient,
        dst_repo: str,
        *,
        parallelism: int,
        resume: ResumeStore | None,
        on_change: Callable[[BlobTally], None],
    ):
        self.src, self.src_repo, self.dst, self.dst_repo = src, src_repo, dst, dst_repo
        if src is dst:  # a streamed blob holds two of the client's slots; never ask for more than exist
            parallelism = min(parallelism, max(1, src.max_connections // 2))
        self._limit = asyncio.Semaphore(max(1, parallelism))
        self._resume = resume
        self._on_change = on_change
        self._same_registry = src.base_url == dst.base_url and src_repo != dst_repo
        self._started: dict[str, asyncio.Task[None]] = {}
        self.tally = BlobTally()

    async def move_all(self, descriptors: Iterable[Descriptor]) -> None:
        """Move every distinct blob; returns when all are on the destination, raises the first failure."""
        fresh = [d for d in descriptors if d.digest not in self._started]
        unique = {d.digest: d for d in fresh}
        self.tally.blobs_total += len(unique)
        self.tally.bytes_total += sum(d.size for d in unique.values())
        self._on_change(self.tally)
        for digest, descriptor in unique.items():
            self._started[digest] = asyncio.ensure_future(self._move(descriptor))
        tasks = [self._started[d.digest] for d in descriptors]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in self._started.values():
                task.cancel()
            await asyncio.gather(*self._started.values(), return_exceptions=True)
            raise

    async def _move(self, blob: Descriptor) -> None:
        async with self._limit:
            key = (self.dst_repo, blob.digest)
            elsewhere = self.dst.uploads_in_flight.get(key)
            if elsewhere is not None:  # another job is bringing this blob: wait, then it is present
                with contextlib.suppress(Exception):  # its failure is its own; we check and upload anew
                    await asyncio.shield(elsewhere)
                await self._bring(blob)
                return
            # claimed before the first await, so concurrent jobs see it and wait
            done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
            self.dst.uploads_in_flight[key] = done
            try:
                await self._bring(blob)
                done.set_result(None)
            except BaseException as exc:
                done.set_exception(exc)
                done.exception()  # retrieved: a failure nobody waited for is not an error to log
                raise
            finally:
                if self.dst.uploads_in_flight.get(key) is done:
                    del self.dst.uploads_in_flight[key]

    async def _bring(self, blob: Descriptor) -> None:
        if await self.dst.blob_exists(self.dst_repo, blob.digest):
            self.tally.skipped += 1
        elif self._same_registry and await self.dst.mount_blob(self.dst_repo, blob.digest, self.src_repo):
            self.tally.mounted += 1
        else:
            await self._stream(blob)
            self.tally.copied += 1
            self._finish(0)
            return
        self._finish(blob.size)

    def _finish(self, unreported_bytes: int) -> None:
        self.tally.blobs_done += 1
        self.tally.bytes_done += unreported_bytes
        self._on_change(self.tally)

    async def _stream(self, blob: Descriptor) -> None:
        key = ResumeKey(self.dst.base_url, self.dst_repo, blob.digest)
        resume = await self._resume.get(key) if self._resume is not None else None
        if resume is not None:
            self.tally.bytes_done += resume.offset  # already on the destination

        async def persist(state: UploadState) -> None:
            if self._resume is not None:
                await self._resume.put(key, state)

        def progress(n: int) -> None:
            self.tally.bytes_done += n
            self.tally.bytes_transferred += n
            self._on_change(self.tally)

        await self.dst.upload_blob(
            self.dst_repo, blob.digest, blob.size,
            lambda offset: self.src.get_blob(self.src_repo, blob.digest, offset=offset),
            resume=resume, on_chunk=persist, on_progress=progress,
        )  # fmt: skip
        if self._resume is not None:
            await self._resume.delete(key)
