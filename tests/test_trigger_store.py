"""The deliveries store on both backends: inserted rows come back whole, a replayed key is skipped."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

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


def test_deadlocks_and_serialization_failures_are_retryable_conflicts() -> None:
    from asyncpg.exceptions import DeadlockDetectedError, SerializationError, UniqueViolationError
    from sqlalchemy.exc import DBAPIError

    from workers.db.engine import is_retryable_conflict

    class Adapted(Exception):  # what SQLAlchemy's asyncpg adapter puts in ``orig``
        sqlstate = "40P01"

    assert is_retryable_conflict(DeadlockDetectedError("deadlock detected"))
    assert is_retryable_conflict(SerializationError("could not serialize"))
    assert is_retryable_conflict(DBAPIError("UPDATE deliveries ...", None, Adapted()))
    assert not is_retryable_conflict(UniqueViolationError("duplicate key"))
    assert not is_retryable_conflict(ValueError("nothing to do with the database"))


async def test_lease_renewal_skips_rows_another_transaction_holds(postgres_url: str) -> None:
    """The outcome write holds its rows; a renewal must neither wait for them nor deadlock with it."""
    import asyncio

    from workers.db import leases
    from workers.db.engine import create_engine
    from workers.db.migrate import upgrade_to_head

    engine = create_engine(postgres_url)
    await upgrade_to_head(engine)
    sessions = session_factory(engine)
    try:
        async with sessions.begin() as session:
            rows = await record_deliveries(session, [planned(1), planned(2)], NOW, lease=timedelta(seconds=30))
        held, free = sorted(d.id for d in rows)
        later = NOW + timedelta(minutes=5)
        async with sessions.begin() as holder:
            await holder.execute(select(Delivery).where(Delivery.id == held).with_for_update())
            async with sessions.begin() as renewer:
                await asyncio.wait_for(leases.renew(renewer, Delivery, [held, free], later), timeout=5)
        async with sessions() as session:
            leased = {d.id: d.lease_until for d in (await session.scalars(select(Delivery))).all()}
        assert leased[free] == later and leased[held] == NOW + timedelta(seconds=30)
    finally:
        await engine.dispose()


async def test_the_matcher_waits_for_room_when_the_deliverer_is_full(monkeypatch: Any) -> None:
    """Backpressure: with MAX_IN_FLIGHT attempts under way the consumer's batch waits (lag, not memory)."""
    import asyncio

    from workers.config import TriggerSettings
    from workers.triggers import delivery as delivery_module
    from workers.triggers.attempts import AttemptRecord

    release = asyncio.Event()

    class HangingAttempts:
        def target_key(self, _delivery: Delivery) -> str:
            return "webhook:https://hooks.example.com"

        async def attempt(self, _delivery: Delivery, _now: datetime) -> AttemptRecord:
            await release.wait()
            return AttemptRecord(status="succeeded", detail="HTTP 200", status_code=200)

    async def written(*_args: Any) -> None:
        return None

    monkeypatch.setattr(delivery_module, "MAX_IN_FLIGHT", 2)
    deliverer = delivery_module.Deliverer(None, TriggerSettings(), HangingAttempts(), lambda: NOW)  # type: ignore[arg-type]
    monkeypatch.setattr(deliverer, "_finish", written)
    deliverer.submit([Delivery(id=i, **_row(i)) for i in (1, 2)])
    waiting = asyncio.create_task(deliverer.wait_for_room())
    await asyncio.sleep(0.05)
    assert not waiting.done(), "two attempts under way: no room"
    release.set()
    await asyncio.wait_for(waiting, timeout=2)


def _row(index: int) -> dict[str, Any]:
    from workers.triggers.store import _delivery_row

    return _delivery_row(planned(index), NOW, timedelta(seconds=30))
