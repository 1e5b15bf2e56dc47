"""Commands on the commands topic (``schemas/commands.v1.schema.json``) and their effects."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import orjson
from sqlalchemy import delete, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.db.models import ImageEventRecord, ScheduleSlot
from workers.errors import InvalidMessage
from workers.iam.audit import sweep_audit
from workers.logs import log_context
from workers.runtime.flow import Record

SCHEMA = "commands.v1"
SWEEP_HISTORY = "sweep-history"
RECONCILE_REPLICATION = "reconcile-replication"
RUN_REPLICATION_POLICY = "run-replication-policy"
RUN_RETENTION = "run-retention"
KINDS = frozenset({SWEEP_HISTORY, RECONCILE_REPLICATION, RUN_REPLICATION_POLICY, RUN_RETENTION})

Params = dict[str, int | str]


@dataclass(frozen=True, slots=True)
class Command:
    id: str  # the slot id for scheduled commands
    kind: str
    issued_at: datetime
    params: Params

    def encode(self) -> bytes:
        return orjson.dumps(
            {
                "schema": SCHEMA,
                "id": self.id,
                "kind": self.kind,
                "issued_at": self.issued_at.isoformat().replace("+00:00", "Z"),
                "params": self.params,
            }
        )


def decode_command(record: Record) -> Command:
    """Raises ``InvalidMessage`` naming what is wrong."""
    try:
        doc = orjson.loads(record.value or b"")
        if not isinstance(doc, dict) or doc.get("schema") != SCHEMA:
            raise ValueError(f"schema: expected {SCHEMA!r}")
        if doc.get("kind") not in KINDS:
            raise ValueError(f"kind: unknown command {doc.get('kind')!r}")
        params = doc.get("params") or {}
        if not isinstance(params, dict) or not all(
            isinstance(v, int | str) and not isinstance(v, bool) for v in params.values()
        ):
            raise ValueError("params: expected an object of integers and strings")
        issued_at = datetime.fromisoformat(str(doc["issued_at"])).astimezone(UTC)
        return Command(id=str(doc["id"]), kind=doc["kind"], issued_at=issued_at, params=params)
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
        raise InvalidMessage(f"invalid command: {exc}") from None


CommandHandler = Callable[[Command], Awaitable[None]]


class CommandRunner:
    """Applies commands; each is idempotent (a redelivered sweep deletes nothing more, a
    redelivered reconcile queues nothing already in flight).

    ``handlers`` maps the other command kinds to the capability that applies them.
    """

    def __init__(
        self,
        sessions: async_sessionmaker[AsyncSession],
        clock: Callable[[], datetime],
        handlers: Mapping[str, CommandHandler] | None = None,
    ):
        self._sessions = sessions
        self._clock = clock
        self._handlers = dict(handlers or {})

    async def __call__(self, commands: Sequence[Command]) -> None:
        for command in commands:
            handler = self._handlers.get(command.kind)
            if handler is not None:
                with log_context(execution_id=command.id):  # the slot or request id, until a run has its own
                    await handler(command)
            async with self._sessions.begin() as session:
                if command.kind == SWEEP_HISTORY:
                    days = int(command.params["days"])
                    audit_days = int(command.params.get("audit_days", days))
                    await sweep_history(
                        session,
                        command.issued_at - timedelta(days=days),
                        audit_older_than=command.issued_at - timedelta(days=audit_days),
                    )
                await session.execute(
                    update(ScheduleSlot).where(ScheduleSlot.id == command.id).values(completed_at=self._clock())
                )


async def sweep_history(
    session: AsyncSession, older_than: datetime, *, audit_older_than: datetime | None = None
) -> int:
    """Delete image event history recorded before ``older_than`` and audit rows before
    ``audit_older_than`` (default: ``older_than``); returns the number of rows deleted."""
    result = await session.execute(delete(ImageEventRecord).where(ImageEventRecord.recorded_at < older_than))
    swept_audit = await sweep_audit(session, audit_older_than or older_than)
    return int(getattr(result, "rowcount", 0) or 0) + swept_audit
