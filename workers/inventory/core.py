"""Decide how a batch of image events changes the inventory. Pure: no I/O.

``fold_events`` collapses an ordered batch into at most one write per artifact row, so the
store can apply a whole batch with a handful of set-based statements:

- a tagged manifest push writes the tag row and the manifest digest row;
- a tagless push writes a manifest digest row (a child of an index) or a blob row;
- a delete with a tag marks that tag deleted; a delete of a digest marks the digest row
  and, in the store, every tag that still points at it (Distribution deletes by digest);
- a pull of a manifest only moves ``pulled_at`` of its tag and digest rows forward; a pull of
  a blob changes no row (nothing reads a blob's pull time: pull-based retention looks at tags
  and manifests), which spares the database its most frequent update. Its history row is
  written all the same.

Within a batch the newest push or delete of a row wins (the later one of equal times), as the
store decides across batches by comparing ``event_at``: a late duplicate never overwrites
newer state, whether it arrives in a later batch or after the newer event in the same one.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import NamedTuple

from workers.events.model import Action, ArtifactKind, ImageEvent

RowKey = tuple[str, str, str]  # (region, name, ref)


class RowWrite(NamedTuple):
    """The state one artifact row should have after a push or delete.

    A named tuple rather than a frozen dataclass: one or two are built per event, and a frozen
    dataclass's ``__init__`` costs four times as much.
    """

    region: str
    name: str
    namespace: str
    repository: str
    ref: str
    kind: str  # "tag" | "manifest" | "blob"
    tag: str | None
    digest: str | None
    media_type: str | None
    size: int | None
    event_at: datetime
    deleted: bool

    @property
    def key(self) -> RowKey:
        return (self.region, self.name, self.ref)


@dataclass(frozen=True, slots=True)
class DigestDeletion:
    """Every tag still pointing at ``digest`` becomes deleted (unless pushed after ``at``)."""

    region: str
    name: str
    digest: str
    at: datetime


@dataclass(slots=True)
class InventoryChanges:
    writes: dict[RowKey, RowWrite] = field(default_factory=dict)
    digest_deletions: list[DigestDeletion] = field(default_factory=list)
    pulls: dict[RowKey, datetime] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.writes or self.digest_deletions or self.pulls)


def fold_events(events: Iterable[ImageEvent]) -> InventoryChanges:
    """Collapse ordered events into the row writes that reproduce their final effect."""
    changes = InventoryChanges()
    for event in events:
        if event.action is Action.PULL:
            _fold_pull(changes, event)
        elif event.action is Action.PUSH:
            for write in _push_writes(event):
                _keep_newest(changes, write)
        else:
            _fold_delete(changes, event)
    return changes


def _push_writes(event: ImageEvent) -> list[RowWrite]:
    writes = []
    if event.digest:
        kind = "manifest" if event.kind is ArtifactKind.MANIFEST else "blob"
        writes.append(_write(event, ref=event.digest, kind=kind, tag=None, deleted=False))
    if event.tag:
        writes.append(_write(event, ref=event.tag, kind="tag", tag=event.tag, deleted=False))
    return writes


def _fold_delete(changes: InventoryChanges, event: ImageEvent) -> None:
    if event.tag:
        _keep_newest(changes, _write(event, ref=event.tag, kind="tag", tag=event.tag, deleted=True))
        return
    if event.digest:
        kind = "manifest" if event.kind is ArtifactKind.MANIFEST else "blob"
        _keep_newest(changes, _write(event, ref=event.digest, kind=kind, tag=None, deleted=True))
        changes.digest_deletions.append(DigestDeletion(event.region, event.name, event.digest, event.occurred_at))


def _keep_newest(changes: InventoryChanges, write: RowWrite) -> None:
    current = changes.writes.get(write.key)
    if current is None or current.event_at <= write.event_at:
        changes.writes[write.key] = write


def _fold_pull(changes: InventoryChanges, event: ImageEvent) -> None:
    if event.kind is ArtifactKind.BLOB:
        return
    for ref in (event.tag, event.digest):
        if ref:
            key = (event.region, event.name, ref)
            previous = changes.pulls.get(key)
            changes.pulls[key] = event.occurred_at if previous is None else max(previous, event.occurred_at)


def _write(event: ImageEvent, *, ref: str, kind: str, tag: str | None, deleted: bool) -> RowWrite:
    return RowWrite(
        region=event.region,
        name=event.name,
        namespace=event.namespace,
        repository=event.repository,
        ref=ref,
        kind=kind,
        tag=tag,
        digest=event.digest,
        media_type=event.media_type,
        size=event.size,
        event_at=event.occurred_at,
        deleted=deleted,
    )
