"""Byte-stream helpers of the upload path: fixed-size chunks with read-ahead, verified release.

No registry I/O here; the streams are whatever the caller passes (a blob download, test data).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from workers.replication.errors import DigestMismatch
from workers.replication.manifests import hasher_for


@contextlib.asynccontextmanager
async def closing(pieces: AsyncIterator[bytes]) -> AsyncIterator[AsyncIterator[bytes]]:
    """Close the source (releasing its connection) even when the upload stops early."""
    try:
        yield pieces
    finally:
        aclose = getattr(pieces, "aclose", None)
        if aclose is not None:
            await aclose()


async def held_back_until_verified(pieces: AsyncIterator[bytes], digest: str, size: int) -> AsyncIterator[bytes]:
    """Yield ``pieces`` but release the last one only once size and digest are right."""
    hasher, seen, held = hasher_for(digest), 0, b""
    async for piece in pieces:
        if held:
            yield held
        hasher.update(piece)
        seen += len(piece)
        held = piece
        if seen > size:
            raise DigestMismatch(f"{digest}: the source has more than the {size} bytes announced")
    _check(hasher, digest, size, seen)
    if held:
        yield held


def _check(hasher: Any, digest: str, size: int, seen: int) -> None:
    if seen != size:
        raise DigestMismatch(f"{digest}: the source has {seen} bytes, {size} announced")
    actual = f"{hasher.name}:{hasher.hexdigest()}"
    if actual != digest:
        raise DigestMismatch(f"the bytes announced as {digest} hash to {actual}")


def digest_matches(hasher: Any, digest: str) -> bool:
    return f"{hasher.name}:{hasher.hexdigest()}" == digest


class Chunker:
    """Cuts a byte stream into ``size``-byte chunks, reading the next one while the caller sends."""

    def __init__(self, pieces: AsyncIterator[bytes], size: int):
        self._pieces = pieces
        self._size = size
        self._buffer = bytearray()
        self._ahead: asyncio.Task[bytes] | None = None

    async def take(self) -> bytes:
        task, self._ahead = self._ahead, None
        chunk = await (task if task is not None else self._read())
        if chunk:
            self._ahead = asyncio.ensure_future(self._read())
        return chunk

    async def _read(self) -> bytes:
        while len(self._buffer) < self._size:
            piece = await anext(self._pieces, None)
            if piece is None:
                break
            self._buffer += piece
        chunk = bytes(self._buffer[: self._size])
        del self._buffer[: self._size]
        return chunk

    async def close(self) -> None:
        if self._ahead is not None:
            self._ahead.cancel()
            await asyncio.gather(self._ahead, return_exceptions=True)  # an outer cancellation still propagates
            self._ahead = None
