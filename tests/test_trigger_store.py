"""The deliveries store on both backends: inserted rows come back whole, a replayed key is skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from workers.db.engine import session_factory
from workers.db.models import Delivery
from workers.events.model import Action, ArtifactKind, ImageEvent, Source
from workers.triggers.matching import PlannedDelivery
from workers.triggers.store import RUNNING, record_deliveries

NOW = datetime(2026, 11, 23, 10, 0, tzinfo=UTC)


def planned(index: int) -> PlannedDelivery:
    event = ImageEvent(
        id=f"evt-{index}", source=Source.DISTRIBUTION, region="region-a", action=Action.PUSH,
        kind=ArtifactKind.MANIFEST, name="team/app", namespace="team", repository="app", tag=f"v{index}",
        digest="sha256:" + f"{index:064x}", media_type="application/vnd.oci.image.manifest.v1+json", size=10,
        occurred_at=NOW, actor="ci",
    )  # fmt: skip
    return PlannedDelivery(
        key=f"webhook:1:0:{event.id}", kind="webhook", event=event, event_type="PUSH_ARTIFACT",
        target="https://hooks.example.com/x", payload='{"type": "PUSH_ARTIFACT"}', content_type="application/json",
        policy_id=1, target_index=0,
    )  # fmt: skip


async def test_recorded_deliveries_come_back_leased_and_a_replayed_key_is_skipped(engine: AsyncEngine) -> None:
    sessions = session_factory(engine)
    lease = timedelta(seconds=30)
    async with sessions.begin() as session:
        first = await record_deliveries(session, [planned(1), planned(2), planned(2)], NOW, lease=lease)
    assert sorted(d.key for d in first) == ["webhook:1:0:evt-1", "webhook:1:0:evt-2"]
    assert all(d.id and d.status == RUNNING and d.payload and d.event_id for d in first)
    assert all(d.lease_until is not None and d.lease_until.replace(tzinfo=UTC) == NOW + lease for d in first)
    async with sessions.begin() as session:
        again = await record_deliveries(session, [planned(2), planned(3)], NOW, lease=lease)
    assert [d.key for d in again] == ["webhook:1:0:evt-3"]
    async with sessions() as session:
        stored = {d.key: d.id for d in (await session.scalars(select(Delivery))).all()}
        assert await session.scalar(select(func.count()).select_from(Delivery)) == 3
    assert {d.key: d.id for d in [*first, *again]} == stored
