"""What a consumer does with its messages: a flow is a worker kind's chain of steps on a topic.

One consumer group per topic reads every record once and hands it to each selected flow.
Steps, in order, for every batch of a flow (records of one or more partitions, each in
offset order):

1. **decode** each record into a typed message; ``InvalidMessage`` → dead letter;
2. **handle** the decoded batch: run the effect and write its history in one unit of work
   (raises ``TransientError`` or a listed transient type to be retried);
3. **commit** the offsets every flow of the consumer has finished — done by the runner,
   always last.

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
    """What one worker kind does with the records of one topic: decode → handle."""

    kind: str  # the worker kind, selectable with `registry-workers worker --kinds`
    topic: str
    decode: Callable[[Record], T]
    handle: Callable[[Sequence[T]], Awaitable[None]]
    transient: tuple[type[BaseException], ...] = field(default=())
    describe: str = ""
    companion: Callable[[asyncio.Event], Coroutine[Any, Any, None]] | None = None
    max_batch: int | None = None  # records per batch, when lower than the worker's setting
    concurrency: int | None = None  # batches in flight, when not the worker's setting

    def erased(self) -> Flow[Any]:
        return self


@dataclass(frozen=True)
class Consumer:
    """One consumer group on one topic; every record goes through each of its flows, then commit."""

    topic: str
    group: str
    flows: tuple[Flow[Any], ...]
