"""Backfill the inventory from the local registry: images pushed while the service was not listening.

Retention plans from the ``artifacts`` inventory, which the registry's notifications fill. Tags
pushed before the service started (or while its ingress was unreachable) are unknown to it, so
no rule would ever count or delete them. :func:`backfill` reads the local region's registry
(catalog, tags, each tag's manifest digest, the image config's ``created`` time; for an index,
its first platform's config) and writes what the inventory lacks through the inventory store's
own upsert (``workers.inventory.store.apply_changes``), so the ``event_at`` guard applies: a
row written from a notification newer than the image's ``created`` time is left alone.

- A tag the inventory does not know, or knows on another digest, gets a tag row and a manifest
  row with ``pushed_at = event_at = created``. ``created`` missing, unreadable, at the Unix
  epoch (reproducible builds) or in the future is replaced by the time of the listing.
- A tag the inventory has live on the same digest is left alone (its push time is better), and
  so is one whose row is newer than the image (``newer``: say, deleted after it was built).
- A tag the inventory has live but the registry no longer lists is marked deleted as of the
  listing time (a push after the listing, being newer, still wins).

Called by ``registry-workers retention backfill`` and ``POST .../retentions/backfill``; blocks
on the registry and the database; registry failures of one repository are reported in
:attr:`BackfillReport.errors` and the other repositories carry on.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.db.models import Artifact, is_tag_row
from workers.events import grammar
from workers.inventory.core import InventoryChanges, RowWrite
from workers.inventory.store import apply_changes
from workers.replication.errors import NotFound, RegistryError
from workers.replication.manifests import Manifest
from workers.replication.registry import RegistryClient

MAX_CONFIG_BYTES = 4 * 1024 * 1024
CONCURRENCY = 8  # manifest and config reads in flight per repository
_EPOCH_SLACK = datetime(1970, 1, 2, tzinfo=UTC)
COUNTS = ("repositories", "tags", "recorded", "known", "newer", "gone")


@dataclass(frozen=True, slots=True)
class RegistryTag:
    digest: str
    media_type: str
    size: int
    created: datetime | None


@dataclass(frozen=True, slots=True)
class KnownTag:
    digest: str | None
    live: bool
    event_at: datetime


@dataclass
class BackfillReport:
    repositories: int = 0
    tags: int = 0  # tags the registry lists
    recorded: int = 0  # tag rows written (new, or on another digest)
    known: int = 0  # already in the inventory on the same digest
    newer: int = 0  # the inventory's row is newer than the image: left alone (the upsert's guard)
    gone: int = 0  # live in the inventory, absent from the registry: marked deleted
    errors: list[str] = field(default_factory=list)

    def describe(self) -> str:
        text = (
            f"{self.repositories} repositories, {self.tags} tags: {self.recorded} recorded, "
            f"{self.known} already known, {self.newer} known from newer events, {self.gone} marked deleted"
        )
        return text + "".join(f"\nerror: {error}" for error in self.errors)

    def as_json(self) -> dict[str, object]:
        return {key: getattr(self, key) for key in (*COUNTS, "errors")}


def backfill_writes(
    region: str, name: str, listed_at: datetime, registry: Mapping[str, RegistryTag], known: Mapping[str, KnownTag]
) -> tuple[list[RowWrite], BackfillReport]:
    """The row writes that make the inventory of ``name`` show what the registry listed. Pure."""
    namespace, repository = grammar.split_repository(name)
    report = BackfillReport(tags=len(registry))
    writes = []

    def write(ref: str, kind: str, tag: str | None, found: RegistryTag | None, at: datetime) -> RowWrite:
        return RowWrite(
            region, name, namespace, repository, ref, kind, tag,
            found.digest if found else None, found.media_type if found else None, found.size if found else None,
            at, found is None,
        )  # fmt: skip

    for tag, found in sorted(registry.items()):
        previous = known.get(tag)
        if previous is not None and previous.live and previous.digest == found.digest:
            report.known += 1
            continue
        at = pushed_time(found.created, listed_at)
        if previous is not None and previous.event_at > at:
            report.newer += 1  # e.g. deleted after this image was built: the event is the better record
            continue
        writes += [write(tag, "tag", tag, found, at), write(found.digest, "manifest", None, found, at)]
        report.recorded += 1
    for tag, previous in sorted(known.items()):
        if previous.live and tag not in registry:
            writes.append(write(tag, "tag", tag, None, listed_at))
            report.gone += 1
    return writes, report


def pushed_time(created: datetime | None, listed_at: datetime) -> datetime:
    """``created`` when it is a plausible push time, else the listing time."""
    if created is None or created < _EPOCH_SLACK or created > listed_at:
        return listed_at
    return created


async def backfill(
    sessions: async_sessionmaker[AsyncSession],
    client: RegistryClient,
    region: str,
    clock: Callable[[], datetime],
    namespace: str | None = None,
    repository: str | None = None,
) -> BackfillReport:
    """Backfill every repository, those of ``namespace``, or ``namespace/repository``."""
    if repository is not None and namespace is None:
        raise ValueError("a repository needs its namespace")
    names = await _repositories(sessions, client, region, namespace, repository)
    total = BackfillReport()
    for name in names:
        try:
            report = await _backfill_repository(sessions, client, region, clock, name)
        except (RegistryError, OSError, TimeoutError) as exc:
            total.errors.append(f"{name}: {exc}")
            continue
        total.repositories += 1
        for key in COUNTS[1:]:
            setattr(total, key, getattr(total, key) + getattr(report, key))
    return total


async def _repositories(
    sessions: async_sessionmaker[AsyncSession],
    client: RegistryClient,
    region: str,
    namespace: str | None,
    repository: str | None,
) -> list[str]:
    if repository is not None:
        return [f"{namespace}/{repository}"]
    listed = set(await client.catalog())
    query = select(Artifact.name).where(Artifact.region == region, is_tag_row(Artifact.tag)).distinct()
    if namespace is not None:
        query = query.where(Artifact.namespace == namespace)
    async with sessions() as session:
        known = set((await session.scalars(query)).all())
    names = listed | known
    if namespace is not None:
        names = {name for name in names if grammar.split_repository(name)[0] == namespace}
    return sorted(names)


async def _backfill_repository(
    sessions: async_sessionmaker[AsyncSession],
    client: RegistryClient,
    region: str,
    clock: Callable[[], datetime],
    name: str,
) -> BackfillReport:
    listed_at = clock()
    try:
        tags = await client.list_tags(name)
    except NotFound:
        tags = []  # the repository is gone: every tag the inventory has live is too
    registry = await _read_tags(client, name, tags)
    async with sessions.begin() as session:
        known = await _known_tags(session, region, name)
        writes, report = backfill_writes(region, name, listed_at, registry, known)
        await apply_changes(session, InventoryChanges(writes={w.key: w for w in writes}), clock())
    return report


async def _read_tags(client: RegistryClient, name: str, tags: list[str]) -> dict[str, RegistryTag]:
    slots = asyncio.Semaphore(CONCURRENCY)
    configs: dict[str, asyncio.Task[datetime | None]] = {}

    async def read(tag: str) -> tuple[str, RegistryTag | None]:
        async with slots:
            try:
                manifest = await client.get_manifest(name, tag)
            except NotFound:
                return tag, None  # deleted since the listing
            config = await _config_digest(client, name, manifest)
        created = None
        if config is not None:
            if config not in configs:  # siblings and rebuilt tags share configs: read each once
                configs[config] = asyncio.create_task(_created(client, name, config, slots))
            created = await configs[config]
        return tag, RegistryTag(manifest.digest, manifest.media_type, len(manifest.raw), created)

    found = await asyncio.gather(*(read(tag) for tag in tags))
    return {tag: entry for tag, entry in found if entry is not None}


async def _config_digest(client: RegistryClient, name: str, manifest: Manifest) -> str | None:
    """The image config's digest; for an index, that of its first platform's image."""
    if manifest.is_index:
        children = manifest.children()
        if not children:
            return None
        try:
            manifest = await client.get_manifest(name, children[0].digest)
        except NotFound:
            return None
    config = manifest.document.get("config")
    digest = config.get("digest") if isinstance(config, dict) else None
    return digest if isinstance(digest, str) else None


async def _created(client: RegistryClient, name: str, digest: str, slots: asyncio.Semaphore) -> datetime | None:
    body = bytearray()
    async with slots:
        try:
            async for piece in client.get_blob(name, digest):
                body += piece
                if len(body) > MAX_CONFIG_BYTES:
                    return None
        except NotFound:
            return None
    try:
        created = json.loads(body).get("created")
        moment = datetime.fromisoformat(created) if isinstance(created, str) else None
    except (ValueError, AttributeError):
        return None
    if moment is None:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


async def _known_tags(session: AsyncSession, region: str, name: str) -> dict[str, KnownTag]:
    rows = await session.execute(
        select(Artifact.ref, Artifact.digest, Artifact.deleted_at, Artifact.event_at).where(
            Artifact.region == region, Artifact.name == name, is_tag_row(Artifact.tag)
        )
    )
    return {ref: KnownTag(digest, deleted is None, at) for ref, digest, deleted, at in rows.all()}
