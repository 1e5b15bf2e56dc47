"""One error taxonomy for everything a worker does with a message.

::

    WorkerError
    ├── InvalidMessage        the message can never be processed: dead-lettered with the
    │                         reason, its offset committed, never retried
    ├── TransientError        a dependency is briefly unavailable (database, broker,
    │                         registry, receiver): retried with backoff by tenacity, on
    │                         these named types only, while the partition is paused
    └── Deferred              business "try later" (a delivery whose next attempt is due in
                              5 minutes): stored with a due time, never a sleep

Dependency exceptions are translated into these at the boundary where they are raised
(``workers.db.transient_errors`` lists the database driver's), so the runner needs to know
only this tree.
"""

from __future__ import annotations

from datetime import datetime


class WorkerError(Exception):
    """Base of every error the worker runtime knows how to route."""


class InvalidMessage(WorkerError):
    """The message is malformed or violates its schema; it goes to the dead-letter topic."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


class TransientError(WorkerError):
    """A dependency failed in a way that is expected to heal; retry the same work later."""


class Deferred(WorkerError):
    """The work is valid but not due yet; it is stored to run at ``due_at``."""

    def __init__(self, due_at: datetime, reason: str):
        super().__init__(reason)
        self.due_at = due_at
        self.reason = reason
