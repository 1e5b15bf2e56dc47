"""What a consumer does with its messages: a flow is a topic, a group and a chain of steps.

Steps, in order, for every batch of one partition:

1. **decode** each record into a typed message; ``InvalidMessage`` → dead letter;
2. **handle** the decoded batch: run the effect and write its history in one unit of work
   (raises ``TransientError`` or a listed transient type to be retried);
3. **commit** the batch's offsets — done by the runner, always last.

A flow may bring a **companion**: a long-lived task started and stopped with its consumer,
for work that must not run inside the poll loop (the triggers' deliverer).

``workers.topology`` lists every flow of the service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Record:
    """The part of a Kafka record the steps see."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...]


@dataclass(frozen=True)
class Flow(Generic[T]):
    """One consumer group on one topic running decode → handle → commit."""

    kind: str  # the worker kind, selectable with `registry-workers worker --kinds`
    topic: str
    group: str
    decode: Callable[[Record], T]
    handle: Callable[[Sequence[T]], Awaitable[None]]
    transient: tuple[type[BaseException], ...] = field(default=())
    describe: str = ""
    companion: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None = None

    def erased(self) -> Flow[Any]:
        return self
