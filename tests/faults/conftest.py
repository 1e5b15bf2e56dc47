"""The fault-injection suite: every scenario reports its counts, printed as one table at the end.

Run it alone with ``make faults`` (or ``pytest tests/faults``); CI runs it with the rest.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.support.service import RunningService
from workers.db.engine import create_engine

COLUMNS = ("sent", "applied", "dead_lettered", "duplicates", "lost")


@dataclass
class ScenarioCounts:
    """What one scenario sent and where every item ended. ``lost`` and ``duplicates`` must be 0."""

    scenario: str
    sent: int = 0
    applied: int = 0
    dead_lettered: int = 0
    duplicates: int = 0
    lost: int = 0
    note: str = ""

    def row(self) -> str:
        counts = " | ".join(f"{getattr(self, name):,}" for name in COLUMNS)
        return f"| {self.scenario} | {counts} | {self.note} |"


_REPORTED: list[ScenarioCounts] = []


@pytest.fixture
def fault_report(request: pytest.FixtureRequest) -> Iterator[ScenarioCounts]:
    """Counts the test fills in; kept for the summary table whether the test passes or fails."""
    counts = ScenarioCounts(scenario=request.node.name)
    yield counts
    _REPORTED.append(counts)


def report_table(rows: list[ScenarioCounts]) -> list[str]:
    header = "| scenario | " + " | ".join(name.replace("_", "-") for name in COLUMNS) + " | note |"
    rule = "|---|" + "---:|" * len(COLUMNS) + "---|"
    return [header, rule, *(row.row() for row in rows)]


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _REPORTED:
        return
    terminalreporter.section("fault-injection scenarios")
    for line in report_table(sorted(_REPORTED, key=lambda row: row.scenario)):
        terminalreporter.write_line(line)


@pytest.fixture
async def engine(service: RunningService) -> AsyncIterator[AsyncEngine]:
    """The database of the scenario's ``service`` (each scenario module defines its own service)."""
    engine = create_engine(service.settings.database_url)
    yield engine
    await engine.dispose()
