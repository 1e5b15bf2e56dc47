"""Operator commands on deliveries: list them and replay finished ones (``registry-workers replay``)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from sqlalchemy import select

from workers.config import Settings
from workers.db.engine import create_engine, session_factory
from workers.db.models import Delivery
from workers.triggers import store


async def replay_deliveries(settings: Settings, delivery_ids: Sequence[int]) -> list[str]:
    """Requeue each finished delivery (due now, schedule restarted); one line of outcome per id."""
    engine = create_engine(settings.database_url)
    try:
        lines = []
        async with session_factory(engine).begin() as session:
            for delivery_id in delivery_ids:
                if await store.replay(session, delivery_id, datetime.now(UTC)):
                    lines.append(f"delivery {delivery_id}: queued for replay")
                elif await session.get(Delivery, delivery_id) is None:
                    lines.append(f"delivery {delivery_id}: not found")
                else:
                    lines.append(f"delivery {delivery_id}: still in progress; not replayed")
        return lines
    finally:
        await engine.dispose()


async def list_deliveries(settings: Settings, status: str | None, limit: int) -> list[str]:
    """The newest deliveries as table rows, optionally only those in ``status``."""
    engine = create_engine(settings.database_url)
    try:
        query = select(Delivery).order_by(Delivery.id.desc()).limit(limit)
        if status:
            query = query.where(Delivery.status == status)
        async with session_factory(engine)() as session:
            rows = (await session.scalars(query)).all()
        return [
            f"{d.id}\t{d.status}\t{d.kind}\t{d.attempts}\t{d.namespace}/{d.repository}:{d.tag or d.digest}"
            f"\t{d.target}\t{d.detail[:120]}"
            for d in rows
        ]
    finally:
        await engine.dispose()
