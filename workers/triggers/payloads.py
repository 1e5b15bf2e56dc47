"""Webhook bodies built from an image event, in the two formats Harbor sends.

Receivers written for Harbor work unchanged: ``harbor_payload`` is Harbor's default webhook
JSON (contract: ``schemas/webhook-harbor.v1.schema.json``) and ``cloudevents_payload`` its
CloudEvents 1.0 structured form (``schemas/webhook-cloudevents.v1.schema.json``), with Harbor's
event type names. Both are also accepted by this service's own Harbor ingress.

Pure and non-blocking. A builder raises ``ValueError`` only for an event that names neither a
tag nor a digest, or for an empty registry host or CloudEvents source.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import orjson

from workers.events.model import Action, ImageEvent

# Harbor's default-format event types.
EVENT_TYPES: dict[Action, str] = {
    Action.PUSH: "PUSH_ARTIFACT",
    Action.DELETE: "DELETE_ARTIFACT",
    Action.PULL: "PULL_ARTIFACT",
}
# Harbor's CloudEvents types.
CLOUDEVENT_TYPES: dict[Action, str] = {
    Action.PUSH: "harbor.artifact.pushed",
    Action.DELETE: "harbor.artifact.deleted",
    Action.PULL: "harbor.artifact.pulled",
}
JSON_CONTENT_TYPE = "application/json"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
CLOUDEVENTS_SPEC_VERSION = "1.0"
# The service does not know the project's visibility; Harbor's safe default.
_REPO_TYPE = "private"


def event_type(event: ImageEvent) -> str:
    """Harbor's default-format type of the event, e.g. ``PUSH_ARTIFACT``."""
    return EVENT_TYPES[event.action]


def harbor_payload(event: ImageEvent, *, registry_host: str) -> dict[str, Any]:
    """Harbor's default webhook body for one event (sent as ``application/json``).

    ``registry_host`` is the pull host written into ``resource_url`` (``https://`` and a
    trailing ``/`` are dropped). ``occur_at`` is whole seconds; the repository's creation date
    is unknown here, so ``date_created`` repeats it.
    """
    return {
        "type": event_type(event),
        "occur_at": _epoch_seconds(event.occurred_at),
        "operator": event.actor or "",
        "event_data": _event_data(event, registry_host),
    }


def cloudevents_payload(event: ImageEvent, *, registry_host: str, source: str) -> dict[str, Any]:
    """Harbor's CloudEvents 1.0 body for one event (sent as ``CLOUDEVENTS_CONTENT_TYPE``).

    ``source`` names this service as the producer, e.g. ``/registry-workers/region-a``. The
    operator is in ``data`` and, as Harbor sends it, in the ``operator`` extension attribute.
    """
    if not source:
        raise ValueError("CloudEvents source: must not be empty")
    operator = event.actor or ""
    return {
        "specversion": CLOUDEVENTS_SPEC_VERSION,
        "id": event.id,
        "source": source,
        "type": CLOUDEVENT_TYPES[event.action],
        "time": _rfc3339(event.occurred_at),
        "datacontenttype": JSON_CONTENT_TYPE,
        "subject": _reference(event),
        "operator": operator,
        "data": {**_event_data(event, registry_host), "operator": operator},
    }


def encode_payload(payload: dict[str, Any]) -> bytes:
    """The compact JSON bytes that are signed and sent."""
    return orjson.dumps(payload)


def _event_data(event: ImageEvent, registry_host: str) -> dict[str, Any]:
    host = registry_host.removeprefix("https://").removeprefix("http://").rstrip("/")
    # With no registry configured for the region the reference has no host (as the SWR API shows it).
    resource = {
        "digest": event.digest,
        # Harbor repeats the digest as the tag of an untagged artifact.
        "tag": event.tag or event.digest,
        "resource_url": f"{host}/{_reference(event)}" if host else _reference(event),
    }
    return {
        "resources": [resource],
        "repository": {
            "date_created": _epoch_seconds(event.occurred_at),
            "name": event.repository,
            "namespace": event.namespace,
            "repo_full_name": event.name,
            "repo_type": _REPO_TYPE,
        },
    }


def _reference(event: ImageEvent) -> str:
    """``name:tag`` when the event has a tag, else ``name@digest``."""
    if event.tag:
        return f"{event.name}:{event.tag}"
    if event.digest:
        return f"{event.name}@{event.digest}"
    raise ValueError(f"event {event.id}: names neither a tag nor a digest")


def _epoch_seconds(moment: datetime) -> int:
    return int(moment.timestamp())


def _rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")
