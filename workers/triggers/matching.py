"""Decide which deliveries an image event causes. Pure: no I/O, no clock.

- A **deployment trigger** fires on a push of a tag of its own repository whose tag its
  condition accepts (``conditions.py``).
- A **webhook policy** sees the manifest events of its own namespace whose event type it
  subscribed to and which its scope rules accept (``selectors.py``); each enabled target gets
  its own delivery, so one slow receiver never holds up another. Pushes by digest alone (the
  platform manifests of an index) do not notify: the tagged push of the index does.

Every delivery carries a deterministic key; the store's unique constraint on it makes a
redelivered message or a registry retry a no-op.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import orjson

from workers.events.model import Action, ArtifactKind, ImageEvent
from workers.triggers.conditions import TagCondition
from workers.triggers.payloads import (
    CLOUDEVENTS_CONTENT_TYPE,
    cloudevents_payload,
    encode_payload,
    event_type,
    harbor_payload,
)
from workers.triggers.selectors import ScopeRule, rules_match

TARGET_TYPES = ("http", "cloudevents")


@dataclass(frozen=True, slots=True)
class TriggerRule:
    """A deployment trigger as the matcher sees it."""

    id: int
    namespace: str
    repository: str
    condition: TagCondition
    workload: str  # for history: "cluster/namespace/app_type/application"


@dataclass(frozen=True, slots=True)
class WebhookTarget:
    index: int
    address: str
    type: str  # "http" (Harbor JSON) | "cloudevents"


@dataclass(frozen=True, slots=True)
class PolicyRule:
    """An enabled webhook policy as the matcher sees it (disabled targets left out)."""

    id: int
    namespace: str
    event_types: frozenset[str]
    scope_rules: tuple[ScopeRule, ...]
    targets: tuple[WebhookTarget, ...]


@dataclass(frozen=True, slots=True)
class PlannedDelivery:
    key: str
    kind: str  # "deployment" | "webhook"
    event: ImageEvent
    event_type: str
    target: str
    payload: str
    content_type: str
    trigger_id: int | None = None
    policy_id: int | None = None
    target_index: int | None = None


@dataclass(frozen=True, slots=True)
class PayloadContext:
    registry_host: str  # host[:port] of the local registry, "" when not configured
    source: str  # CloudEvents source, e.g. "/registry-workers/region-a"


def plan_deliveries(
    events: Iterable[ImageEvent],
    triggers: Sequence[TriggerRule],
    policies: Sequence[PolicyRule],
    context: PayloadContext,
) -> list[PlannedDelivery]:
    """Every delivery the events cause, in event order. Duplicate events yield duplicate keys."""
    planned: list[PlannedDelivery] = []
    for event in events:
        planned.extend(_deployments(event, triggers, context))
        planned.extend(_webhooks(event, policies, context))
    return planned


def fires_deployment(trigger: TriggerRule, event: ImageEvent) -> bool:
    return (
        event.action is Action.PUSH
        and event.kind is ArtifactKind.MANIFEST
        and event.tag is not None
        and event.namespace == trigger.namespace
        and event.repository == trigger.repository
        and trigger.condition.matches(event.tag)
    )


def fires_webhook(policy: PolicyRule, event: ImageEvent) -> bool:
    if event.kind is not ArtifactKind.MANIFEST or event.namespace != policy.namespace:
        return False
    if event.action is Action.PUSH and event.tag is None:
        return False
    return event_type(event) in policy.event_types and rules_match(policy.scope_rules, event.repository, event.tag)


def _deployments(event: ImageEvent, triggers: Sequence[TriggerRule], context: PayloadContext) -> list[PlannedDelivery]:
    matched = [t for t in triggers if fires_deployment(t, event)]
    if not matched:
        return []
    payload = orjson.dumps(
        {"registry": context.registry_host, "name": event.name, "tag": event.tag, "digest": event.digest}
    ).decode()
    return [
        PlannedDelivery(
            key=f"trigger:{t.id}:{event.id}",
            kind="deployment",
            event=event,
            event_type=event_type(event),
            target=t.workload,
            payload=payload,
            content_type="application/json",
            trigger_id=t.id,
        )
        for t in matched
    ]


def _webhooks(event: ImageEvent, policies: Sequence[PolicyRule], context: PayloadContext) -> list[PlannedDelivery]:
    planned = []
    bodies: dict[str, str] = {}
    for policy in policies:
        if not fires_webhook(policy, event):
            continue
        for target in policy.targets:
            if target.type not in bodies:
                bodies[target.type] = _body(event, target.type, context)
            planned.append(
                PlannedDelivery(
                    key=f"webhook:{policy.id}:{target.index}:{event.id}",
                    kind="webhook",
                    event=event,
                    event_type=event_type(event),
                    target=target.address,
                    payload=bodies[target.type],
                    content_type=CLOUDEVENTS_CONTENT_TYPE if target.type == "cloudevents" else "application/json",
                    policy_id=policy.id,
                    target_index=target.index,
                )
            )
    return planned


def _body(event: ImageEvent, target_type: str, context: PayloadContext) -> str:
    if target_type == "cloudevents":
        document = cloudevents_payload(event, registry_host=context.registry_host, source=context.source)
    else:
        document = harbor_payload(event, registry_host=context.registry_host)
    return encode_payload(document).decode()
