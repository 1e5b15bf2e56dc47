"""Engine and session set-up, and the database errors that count as transient."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import asyncpg.exceptions
import sqlalchemy.exc
from sqlalchemy import event
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker, create_async_engine

# Retried by tenacity (workers.runtime.retry); anything else is a bug or invalid data.
TRANSIENT_DB_ERRORS: tuple[type[BaseException], ...] = (
    sqlalchemy.exc.OperationalError,
    sqlalchemy.exc.InterfaceError,
    sqlalchemy.exc.TimeoutError,  # pool checkout timed out
    ConnectionError,
    OSError,
    # raised directly by statements run on the driver connection (inventory/store_pg.py)
    asyncpg.exceptions.PostgresConnectionError,
    asyncpg.exceptions.InterfaceError,
    asyncpg.exceptions.TransactionRollbackError,  # serialization failure, deadlock
    asyncpg.exceptions.OperatorInterventionError,  # admin shutdown, cannot connect now
    asyncpg.exceptions.InsufficientResourcesError,  # too many connections
)


# Postgres asks clients to retry these: serialization_failure, deadlock_detected.
RETRY_SQLSTATES = frozenset({"40001", "40P01"})


def is_retryable_conflict(exc: BaseException) -> bool:
    """A transaction Postgres aborted to resolve a conflict (raw asyncpg or wrapped by SQLAlchemy)."""
    for candidate in (exc, getattr(exc, "orig", None)):
        if getattr(candidate, "sqlstate", None) in RETRY_SQLSTATES:
            return True
    return False


def create_engine(database_url: str, *, pool_size: int = 20) -> AsyncEngine:
    """An engine for Postgres (asyncpg) or SQLite (aiosqlite). Called once per process."""
    if database_url.startswith("sqlite"):
        return _sqlite_engine(database_url)
    return create_async_engine(
        database_url,
        # A pool as large as the process's concurrency: overflow connections are opened and closed
        # per checkout, which under steady load costs more than keeping them.
        pool_size=pool_size,
        max_overflow=pool_size // 4,
        # No pre-ping: it costs three round trips per checkout (most of a small transaction);
        # a connection that died is invalidated by its error, which the callers retry as transient.
        pool_pre_ping=False,
        pool_recycle=1800,
        connect_args={"timeout": 5, "command_timeout": 60},
    )


def _sqlite_engine(database_url: str) -> AsyncEngine:
    path = database_url.split(":///", 1)[1] if ":///" in database_url else ""
    if path and path != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(database_url, connect_args={"timeout": 30})

    @event.listens_for(engine.sync_engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        # WAL lets the API read while a worker writes; busy_timeout waits instead of failing.
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def session_factory(engine: AsyncEngine) -> async_sessionmaker[AsyncSession]:
    """One ``AsyncSession`` per unit of work; objects stay readable after commit."""
    return async_sessionmaker(engine, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """Round-trip ``SELECT 1``; raises one of ``TRANSIENT_DB_ERRORS`` when unreachable."""
    async with engine.connect() as connection:
        await connection.exec_driver_sql("SELECT 1")
