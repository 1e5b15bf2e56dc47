"""Inventory store on Postgres and SQLite: semantics of pushes, deletes, pulls and replays."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.db.engine import session_factory
from workers.db.models import Artifact, ImageEventRecord
from workers.events.model import Action, ArtifactKind, ImageEvent, Source
from workers.inventory.flow import inventory_writer

T0 = datetime(2026, 11, 1, tzinfo=UTC)
D1, D2, BLOB = ("sha256:" + c * 64 for c in "12b")
_ids = itertools.count()


def ev(action: Action, *, tag: str | None = None, digest: str | None = D1, at: int = 0,
       kind: ArtifactKind = ArtifactKind.MANIFEST, name: str = "team/app") -> ImageEvent:  # fmt: skip
    return ImageEvent(
        id=f"e{next(_ids)}", source=Source.DISTRIBUTION, region="region-a", action=action, kind=kind,
        name=name, namespace=name.split("/")[0], repository=name.split("/", 1)[1], tag=tag, digest=digest,
        media_type="application/vnd.oci.image.manifest.v1+json", size=100, occurred_at=T0 + timedelta(seconds=at),
        actor=None,
    )  # fmt: skip


async def apply(engine: AsyncEngine, *batches: Sequence[ImageEvent]) -> None:
    """Through the writer the worker uses: array statements on Postgres, SQLAlchemy on SQLite."""
    write = inventory_writer(engine)
    for batch in batches:
        await write(batch, T0)


async def live_tags(engine: AsyncEngine) -> dict[str, str | None]:
    async with session_factory(engine)() as session:
        rows = await session.execute(
            select(Artifact.tag, Artifact.digest).where(Artifact.kind == "tag", Artifact.deleted_at.is_(None))
        )
        return {tag: digest for tag, digest in rows.all()}


async def test_push_records_tag_and_manifest_digest(engine: AsyncEngine) -> None:
    await apply(engine, [ev(Action.PUSH, tag="v1"), ev(Action.PUSH, digest=BLOB, kind=ArtifactKind.BLOB)])
    async with session_factory(engine)() as session:
        kinds = dict((await session.execute(select(Artifact.ref, Artifact.kind))).all())
    assert kinds == {"v1": "tag", D1: "manifest", BLOB: "blob"}


async def test_retag_then_late_duplicate_of_old_push_changes_nothing(engine: AsyncEngine) -> None:
    old = ev(Action.PUSH, tag="v1", digest=D1, at=1)
    new = ev(Action.PUSH, tag="v1", digest=D2, at=2)
    await apply(engine, [old], [new], [old])  # the registry retried the old event late
    assert await live_tags(engine) == {"v1": D2}


async def test_deleting_a_digest_deletes_every_tag_on_it(engine: AsyncEngine) -> None:
    await apply(
        engine,
        [ev(Action.PUSH, tag="a", at=1), ev(Action.PUSH, tag="b", at=1), ev(Action.PUSH, tag="c", digest=D2, at=1)],
        [ev(Action.DELETE, tag=None, digest=D1, at=2)],
    )
    assert await live_tags(engine) == {"c": D2}


async def test_repush_after_delete_in_one_batch_keeps_the_tag(engine: AsyncEngine) -> None:
    await apply(
        engine,
        [ev(Action.PUSH, tag="a", at=1), ev(Action.DELETE, tag=None, at=2), ev(Action.PUSH, tag="a", at=3)],
    )
    assert await live_tags(engine) == {"a": D1}


async def test_late_duplicate_after_delete_in_one_batch_changes_nothing(engine: AsyncEngine) -> None:
    push_a, push_b = ev(Action.PUSH, tag="a", at=1), ev(Action.PUSH, tag="b", digest=D2, at=1)
    await apply(engine, [push_a, push_b])
    # A re-batched retry: the newer delete first, then the older push it deleted, in one batch.
    delete_a, delete_d2 = ev(Action.DELETE, tag="a", at=2), ev(Action.DELETE, tag=None, digest=D2, at=2)
    await apply(engine, [delete_a, push_a, delete_d2, push_b])
    assert await live_tags(engine) == {}
    async with session_factory(engine)() as session:
        live = (await session.execute(select(Artifact.ref).where(Artifact.deleted_at.is_(None)))).scalars().all()
    assert live == [D1]  # a tag delete leaves the manifest; the digest delete took D2


async def test_tag_delete_event(engine: AsyncEngine) -> None:
    await apply(
        engine, [ev(Action.PUSH, tag="a", at=1), ev(Action.PUSH, tag="b", at=1)], [ev(Action.DELETE, tag="a", at=2)]
    )
    assert await live_tags(engine) == {"b": D1}


async def test_pull_moves_pulled_at_forward_only(engine: AsyncEngine) -> None:
    await apply(
        engine, [ev(Action.PUSH, tag="a", at=1)], [ev(Action.PULL, tag="a", at=5)], [ev(Action.PULL, tag="a", at=3)]
    )
    async with session_factory(engine)() as session:
        pulled = (await session.execute(select(Artifact.pulled_at).where(Artifact.ref == "a"))).scalar_one()
    assert pulled == T0 + timedelta(seconds=5)


async def test_blob_pull_is_history_only(engine: AsyncEngine) -> None:
    blob = {"digest": BLOB, "kind": ArtifactKind.BLOB}
    pushes = [ev(Action.PUSH, tag="a", at=1), ev(Action.PUSH, at=1, **blob)]
    await apply(engine, pushes, [ev(Action.PULL, tag="a", at=5), ev(Action.PULL, at=5, **blob)])
    async with session_factory(engine)() as session:
        pulled = dict((await session.execute(select(Artifact.ref, Artifact.pulled_at))).all())
        recorded = (await session.execute(select(ImageEventRecord.id).where(ImageEventRecord.digest == BLOB))).all()
    assert pulled == {"a": T0 + timedelta(seconds=5), D1: T0 + timedelta(seconds=5), BLOB: None}
    assert len(recorded) == 2  # the blob's push and pull are both in the history


async def test_redelivered_batches_converge_and_history_is_unique(engine: AsyncEngine) -> None:
    events = [ev(Action.PUSH, tag=f"t{i % 7}", digest=(D1, D2)[i % 2], at=i) for i in range(40)]
    await apply(engine, events)
    expected = await live_tags(engine)
    await apply(engine, events[:25], events[10:], events)  # overlapping redeliveries
    assert await live_tags(engine) == expected
    async with session_factory(engine)() as session:
        count = (await session.execute(select(func.count()).select_from(ImageEventRecord))).scalar_one()
    assert count == len(events)
