"""Which copies an image event causes (basic edition automatic sync). Pure: no I/O.

A push of a tagged manifest to the local region queues one job per automatic rule of its
repository, keyed ``auto:{rule}:{event}`` so a redelivered event queues nothing new.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from workers.events.model import Action, ArtifactKind, ImageEvent
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
