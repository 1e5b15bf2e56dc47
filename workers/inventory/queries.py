"""Read the inventory for the SWR API: repositories with aggregates, and tags.

One query per page, set-based (no per-repository round trips).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, Select, and_, asc, case, desc, false, func, or_, select
from sqlalchemy.ext.asyncio import AsyncSession

from workers.db.models import Artifact, is_tag_row

A = Artifact.__table__.c


@dataclass(frozen=True)
class RepositorySummary:
    namespace: str
    repository: str
    name: str
    num_images: int
    size: int
    created_at: datetime | None
    updated_at: datetime | None
    tags: list[str]


@dataclass(frozen=True)
class TagRow:
    id: int
    tag: str
    digest: str | None
    media_type: str | None
    size: int | None
    pushed_at: datetime | None
    updated_at: datetime
    pulled_at: datetime | None


@dataclass(frozen=True)
class Page:
    offset: int
    limit: int
    order_column: str
    descending: bool


REPO_ORDER = {"name": "name", "updated_time": "updated_at", "updated_at": "updated_at", "tag_count": "num_images"}
TAG_ORDER = {"created": "pushed_at", "updated": "updated_at", "tag": "tag", "name": "tag"}


def _live_tags() -> tuple[ColumnElement[bool], ColumnElement[bool]]:
    return (is_tag_row(A.tag), A.deleted_at.is_(None))


async def list_repositories(
    session: AsyncSession,
    region: str,
    page: Page,
    namespace: str | None,
    name_contains: str | None,
    visible: Sequence[tuple[str, str | None]] | None = None,
) -> tuple[int, list[RepositorySummary]]:
    """Repositories with at least one live tag, and the total count before paging.

    ``visible``: only these (namespace, repository) pairs, a repository of None meaning the
    whole namespace (what a caller's SWR grants cover); None means no such restriction.
    """
    is_tag = case((A.kind == "tag", 1), else_=0)
    grouped = (
        select(
            A.namespace,
            A.repository,
            func.min(A.name).label("name"),
            func.sum(is_tag).label("num_images"),
            func.coalesce(func.sum(case((A.kind != "tag", A.size), else_=0)), 0).label("size"),
            func.min(A.pushed_at).label("created_at"),
            func.max(A.event_at).label("updated_at"),
        )
        .where(A.region == region, A.deleted_at.is_(None))
        .group_by(A.namespace, A.repository)
        .having(func.sum(is_tag) > 0)
    )
    if namespace:
        grouped = grouped.where(A.namespace == namespace)
    if name_contains:
        grouped = grouped.where(A.repository.contains(name_contains, autoescape=True))
    if visible is not None:
        grouped = grouped.where(_visible(visible))
    sub = grouped.subquery()
    total = (await session.execute(select(func.count()).select_from(sub))).scalar_one()
    order_col = sub.c[REPO_ORDER.get(page.order_column, "name")]
    ordering = desc(order_col) if page.descending else asc(order_col)
    rows = (
        await session.execute(
            select(sub).order_by(ordering, sub.c.namespace, sub.c.repository).offset(page.offset).limit(page.limit)
        )
    ).all()
    tags = await _tags_of(session, region, [(r.namespace, r.repository) for r in rows])
    return total, [
        RepositorySummary(
            namespace=r.namespace,
            repository=r.repository,
            name=r.name,
            num_images=int(r.num_images),
            size=int(r.size or 0),
            created_at=_aware(r.created_at),
            updated_at=_aware(r.updated_at),
            tags=tags.get((r.namespace, r.repository), []),
        )
        for r in rows
    ]


async def _tags_of(
    session: AsyncSession, region: str, repos: list[tuple[str, str]]
) -> dict[tuple[str, str], list[str]]:
    if not repos:
        return {}
    namespaces = {ns for ns, _ in repos}
    names = {repo for _, repo in repos}
    stmt = (
        select(A.namespace, A.repository, A.tag)
        .where(A.region == region, A.namespace.in_(namespaces), A.repository.in_(names), *_live_tags())
        .order_by(A.tag)
    )
    result: dict[tuple[str, str], list[str]] = {}
    wanted = set(repos)
    for ns, repo, tag in (await session.execute(stmt)).all():
        if (ns, repo) in wanted:
            result.setdefault((ns, repo), []).append(tag)
    return result


async def repository_exists(session: AsyncSession, region: str, namespace: str, repository: str) -> bool:
    stmt = select(A.id).where(A.region == region, A.namespace == namespace, A.repository == repository).limit(1)
    return (await session.execute(stmt)).first() is not None


async def list_tags(
    session: AsyncSession, region: str, namespace: str, repository: str, page: Page, tag_contains: str | None
) -> tuple[int, list[TagRow]]:
    """Live tags of one repository, and the total count before paging."""
    base: Select[tuple[int]] = select(A.id).where(
        A.region == region, A.namespace == namespace, A.repository == repository, *_live_tags()
    )
    if tag_contains:
        base = base.where(A.tag.contains(tag_contains, autoescape=True))
    total = (await session.execute(select(func.count()).select_from(base.subquery()))).scalar_one()
    column = getattr(A, TAG_ORDER.get(page.order_column, "updated_at"))
    ordering = desc(column) if page.descending else asc(column)
    stmt = (
        select(A.id, A.tag, A.digest, A.media_type, A.size, A.pushed_at, A.event_at, A.pulled_at)
        .where(A.id.in_(base))
        .order_by(ordering, A.tag)
        .offset(page.offset)
        .limit(page.limit)
    )
    rows = (await session.execute(stmt)).all()
    return total, [
        TagRow(r.id, r.tag, r.digest, r.media_type, r.size, r.pushed_at, r.event_at, r.pulled_at) for r in rows
    ]


def _aware(value: datetime | None) -> datetime | None:
    from datetime import UTC

    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=UTC)


def _visible(pairs: Sequence[tuple[str, str | None]]) -> ColumnElement[bool]:
    if not pairs:
        return false()
    return or_(
        *(A.namespace == ns if repo is None else and_(A.namespace == ns, A.repository == repo) for ns, repo in pairs)
    )
