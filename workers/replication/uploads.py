"""Blob uploads: monolithic streaming PUT, chunked PATCH, resume from a persisted session.

Small blobs (≤ ``monolithic_max``) go as ``POST`` + one streamed ``PUT ?digest=``. Larger ones go
as ``PATCH`` chunks of ``chunk_size`` (read one chunk ahead from the source, so downloading and
uploading overlap) and a closing empty ``PUT ?digest=``. After each acknowledged chunk the new
:class:`UploadState` is handed to ``on_chunk`` *before* the next chunk is sent, so a persisted
state is never behind a chunk the caller could have known about.

Resuming (spec: ``GET`` on the upload location answers ``204`` with ``Range: 0-<last byte>``)
reopens the source at that offset. Distribution 2.8 facts this code is shaped by:

- its upload URLs carry a signed ``_state`` holding the offset; a ``GET`` with a stale state
  (the session grew after that state was issued, e.g. a chunk partly written before a reset)
  answers ``404 BLOB_UPLOAD_INVALID`` and the session can never be addressed again — we start
  a new one;
- it ignores ``Content-Range`` on ``PATCH`` and appends whatever arrives, so a chunk is never
  re-sent blindly: every retry first asks the registry where the session stands.

A retry first ``HEAD``s the blob: a commit whose answer was lost is not uploaded again.

Integrity: bytes are hashed while streaming. The monolithic ``PUT`` holds back its last piece
until size and digest are checked, so a corrupt source never completes a request; the chunked
path checks before the committing ``PUT``. A resumed upload cannot hash the part sent earlier
(hash state is not persisted); there the registry's own check of ``?digest=`` is the guard, and a
rejected resumed upload is restarted from scratch once.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeAlias

from workers.replication.errors import DigestMismatch, NotFound, RegistryError, TransientRegistryError
from workers.replication.manifests import hasher_for
from workers.replication.streams import Chunker, closing, digest_matches, held_back_until_verified
from workers.replication.transport import Transport

log = logging.getLogger(__name__)

OpenSource: TypeAlias = Callable[[int], AsyncIterator[bytes]]
OnChunk: TypeAlias = Callable[["UploadState"], Awaitable[None]]
OnProgress: TypeAlias = Callable[[int], None]
MiB = 1024 * 1024


@dataclass(frozen=True)
class UploadState:
    """Where an upload session stands: its absolute URL and the bytes the registry acknowledged."""

    location: str
    offset: int


@dataclass(frozen=True)
class UploadTuning:
    monolithic_max: int = 16 * MiB
    chunk_size: int = 8 * MiB


def push_scope(repo: str) -> str:
    return f"repository:{repo}:pull,push"


async def blob_present(t: Transport, repo: str, digest: str) -> bool:
    """``HEAD`` the blob in ``repo``."""
    try:
        await t.call("HEAD", t.url(f"/v2/{repo}/blobs/{digest}"), scope=f"repository:{repo}:pull",
                     what=f"HEAD blob {digest}")  # fmt: skip
    except NotFound:
        return False
    return True


async def start_upload(t: Transport, repo: str) -> UploadState:
    reply = await t.call("POST", t.url(f"/v2/{repo}/blobs/uploads/"), scope=push_scope(repo), ok=(202,),
                         what=f"start upload to {repo}")  # fmt: skip
    return UploadState(t.url(reply.headers["Location"]), 0)


async def upload_status(t: Transport, repo: str, state: UploadState) -> UploadState | None:
    """The session's current state, or ``None`` when it is gone or its ``_state`` is stale."""
    try:
        reply = await t.call("GET", state.location, scope=push_scope(repo), ok=(204,), what=f"upload status {repo}")
    except NotFound:
        return None
    offset = _offset(reply.headers.get("Range"), hint=state.offset)
    return UploadState(t.url(reply.headers.get("Location", state.location)), offset)


async def cancel_upload(t: Transport, repo: str, state: UploadState) -> None:
    """Best effort ``DELETE`` of a session; a stale or finished one is simply left to purging."""
    with contextlib.suppress(RegistryError):
        await t.call("DELETE", state.location, scope=push_scope(repo), ok=(204, 202, 200), what="cancel upload")


def _offset(range_header: str | None, hint: int) -> int:
    if not range_header:
        return hint
    start, _, end = range_header.removeprefix("bytes=").partition("-")
    if start.strip() != "0" or not end.strip().isdigit():
        raise RegistryError(None, None, f"unreadable upload Range {range_header!r}")
    last = int(end)
    if last == 0:  # "0-0" is both "empty" (what Distribution means) and "one byte" (the spec)
        return 1 if hint == 1 else 0
    return last + 1


def _with_digest(location: str, digest: str) -> str:
    return f"{location}{'&' if '?' in location else '?'}digest={digest}"


async def upload_blob(
    t: Transport,
    tuning: UploadTuning,
    repo: str,
    digest: str,
    size: int,
    open_source: OpenSource,
    *,
    resume: UploadState | None = None,
    on_chunk: OnChunk | None = None,
    on_progress: OnProgress | None = None,
) -> int:
    """Upload one blob, retrying transient failures by resuming (or restarting) the session.

    ``open_source(offset)`` must yield the blob's bytes from ``offset``. Returns the bytes the
    registry acknowledged during this call. Raises ``DigestMismatch`` when the source does not
    match ``digest``/``size`` (the session is cancelled), ``TransientRegistryError`` when the
    retry policy gives up, other ``RegistryError`` for refusals.
    """
    latest = resume
    sent = 0
    restarted = False

    async def remember(state: UploadState) -> None:
        nonlocal latest
        latest = state
        if on_chunk is not None:
            await on_chunk(state)

    def count(n: int) -> None:
        nonlocal sent
        sent += n
        if on_progress is not None:
            on_progress(n)

    while True:
        try:
            async for attempt in t.retry.retrying():
                with attempt:
                    # A commit whose answer was lost leaves the blob in place: never upload it twice.
                    if attempt.retry_state.attempt_number > 1 and await blob_present(t, repo, digest):
                        break
                    if latest is None and size <= tuning.monolithic_max:
                        await _monolithic(t, repo, digest, size, open_source, count)
                    else:
                        await _chunked(t, tuning.chunk_size, repo, digest, size, open_source, latest, remember, count)
            return sent
        except _SessionCorrupt:
            if restarted:
                raise
            # E.g. a resumed prefix we could not hash, or bytes Distribution appended blindly.
            log.warning("resumed upload of %s to %s was rejected; restarting it", digest, repo)
            latest, restarted = None, True


async def _monolithic(
    t: Transport, repo: str, digest: str, size: int, open_source: OpenSource, count: OnProgress
) -> None:
    state = await start_upload(t, repo)
    failure: list[BaseException] = []

    async def body() -> AsyncGenerator[bytes, None]:
        try:
            async with closing(open_source(0)) as pieces:
                async for piece in held_back_until_verified(pieces, digest, size):
                    yield piece
        except Exception as exc:
            failure.append(exc)  # aiohttp may wrap what the body raised; keep the original
            raise

    headers = {"Content-Type": "application/octet-stream", "Content-Length": str(size)}
    # Open the source (taking its connection slot) before the PUT takes the destination's: the
    # same order as chunked uploads, so copies running at once can never hold one registry's
    # slots each while waiting for the other's (a deadlock seen with 8 concurrent copies).
    source = body()
    try:
        first = await anext(source)
    except StopAsyncIteration:
        first = b""
    except Exception as exc:
        await cancel_upload(t, repo, state)
        if isinstance(exc, RegistryError):
            raise
        raise TransientRegistryError(None, None, f"reading {digest} failed: {exc!r}") from exc

    async def primed() -> AsyncGenerator[bytes, None]:
        if first:
            yield first
        async for piece in source:
            yield piece

    stream = primed()
    try:
        await t.send("PUT", _with_digest(state.location, digest), stream, scope=push_scope(repo), ok=(201,),
                     headers=headers, what=f"upload {digest} to {repo}")  # fmt: skip
    except Exception as exc:
        await cancel_upload(t, repo, state)
        original = failure[0] if failure else exc
        if original is exc:
            raise
        if isinstance(original, RegistryError):
            raise original from exc
        raise TransientRegistryError(None, None, f"reading {digest} failed: {original!r}") from exc
    finally:
        # Release the source's connection now, not when garbage collected. aiohttp's writer may
        # still be inside the generator after a failed PUT; it then closes it itself.
        with contextlib.suppress(RuntimeError):
            await stream.aclose()
        with contextlib.suppress(RuntimeError):
            await source.aclose()
    count(size)


async def _chunked(
    t: Transport,
    chunk_size: int,
    repo: str,
    digest: str,
    size: int,
    open_source: OpenSource,
    resume: UploadState | None,
    remember: OnChunk,
    count: OnProgress,
) -> None:
    state = await upload_status(t, repo, resume) if resume is not None else None
    if state is None:
        if resume is not None:
            log.info("upload session for %s in %s is gone or stale; starting a new one", digest, repo)
        state = await start_upload(t, repo)
    hasher = hasher_for(digest) if state.offset == 0 else None  # a resumed prefix cannot be hashed here
    what = f"upload {digest} to {repo}"
    complete = state.offset == size
    if state.offset < size:
        async with closing(open_source(state.offset)) as pieces:
            chunks = Chunker(pieces, chunk_size)
            try:
                while state.offset < size and (chunk := await chunks.take()):
                    if hasher is not None:
                        hasher.update(chunk)
                    state = await _patch(t, repo, state, chunk, what)
                    await remember(state)
                    count(len(chunk))
                complete = state.offset == size and not await chunks.take()
            finally:
                await chunks.close()
    if not complete or (hasher is not None and not digest_matches(hasher, digest)):
        await cancel_upload(t, repo, state)
        raise DigestMismatch(f"{digest}: the source does not match its digest or its size {size} (at {state.offset})")
    headers = {"Content-Type": "application/octet-stream", "Content-Length": "0"}
    try:
        await _committing(t.call("PUT", _with_digest(state.location, digest), scope=push_scope(repo), ok=(201,),
                                 headers=headers, data=b"", what=what))  # fmt: skip
    except DigestMismatch as exc:
        # The registry hashed what it holds and disagrees: its copy is damaged, not our source.
        raise _SessionCorrupt(exc.message) from exc


class _SessionCorrupt(DigestMismatch):
    """The registry refused the committed session's content although our source checked out."""


async def _patch(t: Transport, repo: str, state: UploadState, chunk: bytes, what: str) -> UploadState:
    end = state.offset + len(chunk)
    headers = {"Content-Type": "application/octet-stream", "Content-Range": f"{state.offset}-{end - 1}",
               "Content-Length": str(len(chunk))}  # fmt: skip
    reply = await _committing(t.send("PATCH", state.location, chunk, scope=push_scope(repo), ok=(202,),
                                     headers=headers, what=f"{what} [{state.offset}-{end})"))  # fmt: skip
    acknowledged = UploadState(
        t.url(reply.headers.get("Location", state.location)), _offset(reply.headers.get("Range"), end)
    )
    if acknowledged.offset != end:
        raise TransientRegistryError(202, None, f"{what}: registry is at {acknowledged.offset}, expected {end}")
    return acknowledged


async def _committing(request: Awaitable[Any]) -> Any:
    """Run an upload request; a session that vanished or is out of sync becomes retryable."""
    try:
        return await request
    except RegistryError as exc:
        if isinstance(exc, NotFound) or exc.status == 416 or exc.code in ("BLOB_UPLOAD_INVALID", "BLOB_UPLOAD_UNKNOWN"):
            raise TransientRegistryError(exc.status, exc.code, f"upload session lost: {exc.message}") from exc
        raise
