"""Where interrupted chunked uploads are remembered, so a crashed copy resumes instead of restarting.

A key names one blob upload: ``(destination registry URL, destination repository, digest)``. The
copy engine ``put``s the state after every acknowledged chunk (before sending the next), ``get``s
it when it starts a blob, and ``delete``s it once the blob is committed. A state found for a
session the registry no longer knows is harmless: the upload starts over.
"""

from __future__ import annotations

from typing import NamedTuple, Protocol

from workers.replication.uploads import UploadState


class ResumeKey(NamedTuple):
    registry: str
    repository: str
    digest: str

    def as_text(self) -> str:
        """One string for a database key: ``REGISTRY/REPOSITORY@DIGEST``."""
        return f"{self.registry}/{self.repository}@{self.digest}"


class ResumeStore(Protocol):
    """Persistence of upload sessions; implementations may block on their database."""

    async def get(self, key: ResumeKey) -> UploadState | None: ...

    async def put(self, key: ResumeKey, state: UploadState) -> None: ...

    async def delete(self, key: ResumeKey) -> None: ...


class MemoryResumeStore:
    """A ``ResumeStore`` in a dict: for tests and single-process runs (lost on restart)."""

    def __init__(self) -> None:
        self.states: dict[ResumeKey, UploadState] = {}
        self.history: list[tuple[ResumeKey, UploadState]] = []  # every put, in order

    async def get(self, key: ResumeKey) -> UploadState | None:
        return self.states.get(key)

    async def put(self, key: ResumeKey, state: UploadState) -> None:
        self.states[key] = state
        self.history.append((key, state))

    async def delete(self, key: ResumeKey) -> None:
        self.states.pop(key, None)
