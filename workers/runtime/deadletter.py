"""The dead-letter topic: where messages that can never be processed go, with the reason."""

from __future__ import annotations

from workers.runtime.flow import Record
from workers.runtime.producer import OutgoingMessage, Producer


class DeadLetters:
    """Publishes a record's original key and value plus headers saying why and from where.

    ``send`` returns after the broker acknowledged; it raises ``BrokerUnavailable`` otherwise
    (the runner retries it like any transient failure, so a dead letter is never dropped).
    """

    def __init__(self, producer: Producer, topic: str):
        self._producer = producer
        self._topic = topic

    async def send(self, record: Record, kind: str, reason: str) -> None:
        headers = (
            ("rw-reason", reason[:2000].encode()),
            ("rw-kind", kind.encode()),
            ("rw-source-topic", record.topic.encode()),
            ("rw-source-partition", str(record.partition).encode()),
            ("rw-source-offset", str(record.offset).encode()),
            *record.headers,
        )
        message = OutgoingMessage(self._topic, record.key, record.value or b"", headers)
        await self._producer.publish([message])
