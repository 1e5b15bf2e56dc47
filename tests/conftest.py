"""Fixtures that start real services: Postgres, the Kafka-protocol broker, Distribution."""

from __future__ import annotations

import itertools
import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.services import KafkaBroker, PostgresServer
from workers.db.engine import create_engine
from workers.db.migrate import upgrade_to_head

_database_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    with PostgresServer() as server:
        yield server


@pytest.fixture(scope="session")
def kafka() -> Iterator[KafkaBroker]:
    with KafkaBroker() as broker:
        yield broker


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> str:
    """A fresh, empty database on the session's Postgres server."""
    return postgres.create_database(f"test_{os.getpid()}_{next(_database_numbers)}")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'registry-workers.db'}"


@pytest.fixture(params=["postgres", "sqlite"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Runs a test once on Postgres and once on SQLite."""
    fixture = "postgres_url" if request.param == "postgres" else "sqlite_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
async def engine(database_url: str) -> AsyncIterator[AsyncEngine]:
    """A migrated engine on the parametrised backend."""
    engine = create_engine(database_url)
    await upgrade_to_head(engine)
    yield engine
    await engine.dispose()


_topic_numbers = itertools.count(1)


@pytest.fixture
def topic_prefix() -> str:
    """A prefix no other test uses, so topics and groups never collide on the shared broker."""
    return f"t{os.getpid()}-{next(_topic_numbers)}"
