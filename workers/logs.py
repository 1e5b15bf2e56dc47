"""Logging: one line per record, with the fields operators filter on.

``json`` (the default) writes one JSON object per line: ``timestamp``, ``level``, ``logger``,
``message``, ``exception`` (the traceback, when there is one) and the fields of the current log
context — ``event_id``, ``repository``, ``execution_id`` — when they are known. ``text`` keeps the
human format ``TIME LEVEL LOGGER: MESSAGE``.

The log context lives in a ``ContextVar``, so it follows the asyncio task that set it and never
leaks into another: set it with ``log_context`` around a unit of work, or give a new task its own
with ``asyncio.create_task(coro, context=context_with(...))``. A field passed with ``extra=``
wins over the context's. Setting the context costs a dict copy: do it per unit of work (a
delivery, a job, a run) or on a failure path, never per event on the hot path.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import sys
from collections.abc import Iterator, Mapping
from types import MappingProxyType
from typing import TextIO

from pythonjsonlogger.json import JsonFormatter

LOG_FORMATS = ("json", "text")
CONTEXT_FIELDS = ("event_id", "repository", "execution_id")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"

_EMPTY: Mapping[str, str] = MappingProxyType({})
_FIELDS: contextvars.ContextVar[Mapping[str, str]] = contextvars.ContextVar("registry_workers_log_context")


def configure_logging(level: str, format: str = "json", stream: TextIO | None = None) -> None:
    """Route every record to ``stream`` (stderr) in ``format``; called once by the CLI at start-up."""
    root = logging.getLogger()
    root.handlers[:] = [log_handler(format, stream)]
    root.setLevel(level)
    logging.getLogger("aiokafka").setLevel(max(logging.WARNING, root.level))


def log_handler(format: str = "json", stream: TextIO | None = None) -> logging.Handler:
    """A stream handler writing ``json`` or ``text`` lines, with the log context on every record."""
    if format not in LOG_FORMATS:
        raise ValueError(f"unknown log format {format!r}; expected one of {', '.join(LOG_FORMATS)}")
    handler = logging.StreamHandler(sys.stderr if stream is None else stream)
    handler.addFilter(LogContextFilter())
    if format == "json":
        handler.setFormatter(
            JsonFormatter(
                ["levelname", "name", "message"],
                rename_fields={"levelname": "level", "name": "logger", "exc_info": "exception"},
                timestamp=True,
            )
        )
    else:
        handler.setFormatter(logging.Formatter(TEXT_FORMAT))
    return handler


class LogContextFilter(logging.Filter):
    """Copies the current log context onto each record (fields given with ``extra=`` win)."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in _FIELDS.get(_EMPTY).items():
            record.__dict__.setdefault(key, value)
        return True


def current_log_context() -> Mapping[str, str]:
    """The fields the next record logged by this task will carry."""
    return _FIELDS.get(_EMPTY)


@contextlib.contextmanager
def log_context(*, event_id: object = None, repository: object = None, execution_id: object = None) -> Iterator[None]:
    """Within the block, records of this task carry these fields (None leaves a field as it was)."""
    token = _FIELDS.set(_merged(event_id, repository, execution_id))
    try:
        yield
    finally:
        _FIELDS.reset(token)


def bind_log_context(*, event_id: object = None, repository: object = None, execution_id: object = None) -> None:
    """Add fields to the enclosing ``log_context`` block once they become known (e.g. a run's id).

    Only inside a ``log_context`` block: its exit removes these fields too.
    """
    _FIELDS.set(_merged(event_id, repository, execution_id))


def context_with(
    *, event_id: object = None, repository: object = None, execution_id: object = None
) -> contextvars.Context:
    """A copy of the current context carrying these fields: ``create_task(..., context=...)``."""
    context = contextvars.copy_context()
    context.run(_FIELDS.set, _merged(event_id, repository, execution_id))
    return context


def _merged(event_id: object, repository: object, execution_id: object) -> Mapping[str, str]:
    fields = dict(_FIELDS.get(_EMPTY))
    for key, value in zip(CONTEXT_FIELDS, (event_id, repository, execution_id), strict=True):
        if value is not None:
            fields[key] = str(value)
    return MappingProxyType(fields)
