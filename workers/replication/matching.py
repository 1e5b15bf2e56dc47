"""Which copies an image event causes. Pure: no I/O.

- Basic edition: a push of a tagged manifest to the local region queues one job per
  automatic sync rule of its repository, keyed ``auto:{rule}:{event}``.
- Enterprise edition: an ``event_based`` policy whose filters select the repository and tag
  queues a copy, and, with ``replicate_deletion``, a delete replicates a deletion; keyed
  ``policy:{policy}:{event}``.

Keys make a redelivered event queue nothing new.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from workers.events.model import Action, ArtifactKind, ImageEvent
from workers.replication.policies import PolicyFilters
from workers.replication.store import JobRequest


@dataclass(frozen=True, slots=True)
class AutoSyncRule:
    id: int
    namespace: str
    repository: str
    remote_region: str
    remote_namespace: str
    override: bool


def plan_auto_sync(events: Iterable[ImageEvent], rules: Sequence[AutoSyncRule], local_region: str) -> list[JobRequest]:
    """One job per (rule, tagged push of its repository in the local region), in event order."""
    by_repository: dict[tuple[str, str], list[AutoSyncRule]] = {}
    for rule in rules:
        by_repository.setdefault((rule.namespace, rule.repository), []).append(rule)
    jobs = []
    for event in events:
        if not _is_tagged_push(event, local_region):
            continue
        assert event.tag is not None
        for rule in by_repository.get((event.namespace, event.repository), ()):
            jobs.append(
                JobRequest(
                    key=f"auto:{rule.id}:{event.id}",
                    trigger="auto",
                    source_region=local_region,
                    namespace=event.namespace,
                    repository=event.repository,
                    tag=event.tag,
                    digest=event.digest,
                    remote_region=rule.remote_region,
                    remote_namespace=rule.remote_namespace,
                    override=rule.override,
                    rule_id=rule.id,
                    operator_name=event.actor or "",
                )
            )
    return jobs


def _is_tagged_push(event: ImageEvent, local_region: str) -> bool:
    return (
        event.action is Action.PUSH
        and event.kind is ArtifactKind.MANIFEST
        and event.tag is not None
        and event.region == local_region
    )


@dataclass(frozen=True, slots=True)
class EventPolicy:
    """An enabled ``event_based`` replication policy whose source is the local region."""

    id: int
    name: str
    filters: PolicyFilters
    remote_region: str
    dest_namespace: str
    override: bool
    replicate_deletion: bool


def plan_policy_events(
    events: Iterable[ImageEvent], policies: Sequence[EventPolicy], local_region: str
) -> dict[int, list[JobRequest]]:
    """Per policy, the copies (tagged pushes) and deletions its filters select, keyed per event."""
    planned: dict[int, list[JobRequest]] = {}
    for event in events:
        if event.region != local_region or event.kind is not ArtifactKind.MANIFEST:
            continue
        for policy in policies:
            request = _policy_request(event, policy)
            if request is not None:
                planned.setdefault(policy.id, []).append(request)
    return planned


def _policy_request(event: ImageEvent, policy: EventPolicy) -> JobRequest | None:
    if not policy.filters.repository_matches(event.name):
        return None
    if event.action is Action.PUSH and event.tag is not None and policy.filters.tag_matches(event.tag):
        operation = "copy"
    elif (
        event.action is Action.DELETE
        and policy.replicate_deletion
        and (event.tag is None or policy.filters.tag_matches(event.tag))
    ):
        operation = "delete"
    else:
        return None
    return JobRequest(
        key=f"policy:{policy.id}:{event.id}",
        trigger="policy",
        source_region=event.region,
        namespace=event.namespace,
        repository=event.repository,
        tag=event.tag or "",
        digest=event.digest,
        remote_region=policy.remote_region,
        remote_namespace=policy.dest_namespace or event.namespace,
        override=policy.override,
        policy_id=policy.id,
        operation=operation,
        operator_name=f"policy {policy.name}",
    )
