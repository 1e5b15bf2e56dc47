"""Typed SQLAlchemy models. Every schema change comes with an Alembic revision."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, MetaData, String, UniqueConstraint
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from workers.db.types import BigIntId, UtcDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


class Artifact(Base):
    """What one region's registry holds: one row per tag and one per manifest or blob digest.

    ``ref`` is the tag for ``kind='tag'`` rows and the digest otherwise (tags cannot contain
    ``:``, digests always do, so the two never collide). ``event_at`` is the time of the newest
    push or delete applied to the row: older events arriving late change nothing.
    """

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("region", "name", "ref"),
        Index("ix_artifacts_listing", "region", "namespace", "repository", "kind"),
        Index("ix_artifacts_digest", "region", "name", "digest"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    region: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    namespace: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(255))
    ref: Mapped[str] = mapped_column(String(160))
    kind: Mapped[str] = mapped_column(String(16))
    tag: Mapped[str | None] = mapped_column(String(128))
    digest: Mapped[str | None] = mapped_column(String(160))
    media_type: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    pushed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    pulled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    event_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ImageEventRecord(Base):
    """Every image event a worker consumed: the inventory's history and its duplicate filter."""

    __tablename__ = "image_events"
    # BRIN on Postgres: rows arrive in recorded_at order, and a BRIN index costs next to
    # nothing per insert while still serving the retention sweep's range delete.
    __table_args__ = (Index("ix_image_events_recorded_at", "recorded_at", postgresql_using="brin"),)

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    region: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str | None] = mapped_column(String(128))
    digest: Mapped[str | None] = mapped_column(String(160))
    actor: Mapped[str | None] = mapped_column(String(255))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ScheduleSlot(Base):
    """One fire time of one schedule; the primary key lets exactly one scheduler dispatch it."""

    __tablename__ = "schedule_slots"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    job: Mapped[str] = mapped_column(String(100))
    slot_at: Mapped[datetime] = mapped_column(UtcDateTime)
    dispatched_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
