"""One attempt of one delivery: call the webhook or update the workload, judge the outcome.

Reads the current trigger or policy (a deleted one cancels the delivery; rotated secrets and
edited auth headers apply to the next attempt) and returns an ``AttemptRecord`` saying what
happened and when to try again. Raises nothing for a failed call: failure is an outcome.
"""

from __future__ import annotations

import random
import time
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from workers.config import Settings
from workers.db import versions
from workers.db.models import Delivery, DeploymentTrigger, WebhookPolicy
from workers.iam.audit import TRIGGER_FIRED, system_action_row
from workers.secrets import SecretBox, SecretError
from workers.triggers import store
from workers.triggers.http import WebhookClient
from workers.triggers.kube import ClusterClients, KubeError, WorkloadRef, update_workload_image
from workers.triggers.retry import Verdict, judge_response, next_delay, parse_retry_after
from workers.triggers.signing import webhook_headers
from workers.triggers.store import AttemptRecord

USER_AGENT = "registry-workers"
GAVE_UP = "gave up after"  # how the detail of a delivery whose retries ran out starts
POLICY_TTL_S = 1.0


class AttemptRunner:
    """Executes attempts; owns the HTTP and Kubernetes clients (closed by ``close``)."""

    def __init__(self, sessions: async_sessionmaker[AsyncSession], settings: Settings, box: SecretBox):
        self._sessions = sessions
        self._settings = settings
        self._box = box
        self._http = WebhookClient(settings.triggers)
        self._clusters = ClusterClients(settings.clusters)
        self._policies: dict[int, _PolicySnapshot] = {}
        self._policies_version = -1
        self._policies_checked_at = -POLICY_TTL_S

    def target_key(self, delivery: Delivery) -> str:
        """The isolation unit: a webhook receiver's origin, or a cluster."""
        if delivery.kind == "webhook":
            parts = urlsplit(delivery.target)
            return f"webhook:{parts.scheme}://{parts.netloc}"
        return f"cluster:{delivery.target.split('/', 1)[0]}"

    async def attempt(self, delivery: Delivery, now: datetime) -> AttemptRecord:
        if delivery.kind == "webhook":
            return await self._webhook(delivery, now)
        return await self._deployment(delivery, now)

    async def close(self) -> None:
        await self._http.close()
        await self._clusters.close()

    # --- webhooks ---

    async def _policy(self, policy_id: int | None) -> _PolicySnapshot | None:
        """The policy with its secrets decrypted, read once and kept while the rules' version stands.

        Every change to a policy (targets, secrets, deletion) bumps ``rule_versions['triggers']``;
        the version is read at most every ``POLICY_TTL_S`` for all policies together, so an edit
        applies to attempts starting ``POLICY_TTL_S`` later at most (a 410 invalidates at once),
        at one query a second instead of one per policy.
        """
        if policy_id is None:
            return None
        await self._revalidate_policies()
        cached = self._policies.get(policy_id)
        if cached is not None:
            return cached
        async with self._sessions() as session:
            policy = await session.get(WebhookPolicy, policy_id)
        if policy is None:
            return None
        snapshot = _PolicySnapshot.of(policy, self._box)
        self._policies[policy_id] = snapshot
        return snapshot

    async def _revalidate_policies(self) -> None:
        now = time.monotonic()
        if now - self._policies_checked_at < POLICY_TTL_S:
            return
        self._policies_checked_at = now  # before the await: concurrent attempts do not query too
        async with self._sessions() as session:
            version = await versions.current(session, versions.TRIGGER_RULES)
        if version != self._policies_version:
            self._policies.clear()
            self._policies_version = version

    async def _webhook(self, delivery: Delivery, now: datetime) -> AttemptRecord:
        try:
            policy = await self._policy(delivery.policy_id)
        except SecretError as exc:
            return AttemptRecord(store.FAILED, f"cannot decrypt the policy's secrets: {exc}")
        target = policy.target(delivery.target_index) if policy is not None else None
        if policy is None or target is None:
            return AttemptRecord(store.CANCELLED, "the webhook policy or target was deleted")
        if target.get("disabled_at"):
            return AttemptRecord(store.CANCELLED, "the target was disabled after answering 410 Gone")
        headers = self._webhook_headers(delivery, policy, delivery.target_index or 0, now)
        result = await self._http.post(
            delivery.target, delivery.payload.encode(), headers, verify_tls=not target.get("skip_cert_verify")
        )
        verdict = judge_response(result.status)
        if verdict is Verdict.SUCCEEDED:
            return AttemptRecord(store.SUCCEEDED, result.describe(), result.status, result.latency_ms)
        if verdict is Verdict.GONE:
            self._policies.pop(policy.id, None)
            await self._disable_target(policy.id, delivery.target_index, now)
            return AttemptRecord(store.FAILED, "HTTP 410 Gone: target disabled", result.status, result.latency_ms)
        retry_after = parse_retry_after(result.retry_after, now) if result.status in (429, 503) else None
        schedule = policy.retry_schedule_s or self._settings.triggers.retry_schedule_s
        return self._retry_or_give_up(
            delivery, schedule, result.describe(), now, result.status, result.latency_ms, retry_after
        )

    def _webhook_headers(
        self, delivery: Delivery, policy: _PolicySnapshot, index: int, now: datetime
    ) -> dict[str, str]:
        body = delivery.payload.encode()
        headers = webhook_headers(policy.secrets, f"msg_{delivery.id}", int(now.timestamp()), body)
        headers["Content-Type"] = delivery.content_type
        headers["User-Agent"] = USER_AGENT
        auth = policy.auth_headers.get(index)
        if auth is not None:
            headers[auth[0]] = auth[1]
        return headers

    async def _disable_target(self, policy_id: int, index: int | None, now: datetime) -> None:
        async with self._sessions.begin() as session:
            policy = await session.get(WebhookPolicy, policy_id, with_for_update=True)
            if policy is None or index is None or index >= len(policy.targets):
                return
            targets = [dict(t) for t in policy.targets]
            targets[index]["disabled_at"] = now.isoformat()
            policy.targets = targets
            await versions.bump(session, versions.TRIGGER_RULES)
            policy.updated_at = now
            await store.cancel_pending(
                session, now, policy_id=policy_id, target_index=index, reason="target disabled after answering 410 Gone"
            )

    # --- deployments ---

    async def _deployment(self, delivery: Delivery, now: datetime) -> AttemptRecord:
        async with self._sessions() as session:
            trigger = await session.get(DeploymentTrigger, delivery.trigger_id)
        if trigger is None:
            return AttemptRecord(store.CANCELLED, "the trigger was deleted")
        image = self._image(orjson.loads(delivery.payload))
        if image is None:
            return AttemptRecord(
                store.FAILED,
                f"no registry URL configured for region {self._settings.region!r} "
                f"(regions.{self._settings.region}.registry)",
            )
        cluster = self._clusters.resolve(trigger.cluster_id or None, trigger.cluster_name or None)
        if cluster is None:
            return AttemptRecord(
                store.FAILED,
                f"unknown cluster {trigger.cluster_id or trigger.cluster_name!r}: "
                "add it under clusters: in the configuration",
            )
        ref = WorkloadRef(cluster, trigger.cluster_ns, trigger.app_type, trigger.application, trigger.container or None)
        verify = self._settings.triggers.verify_rollout if trigger.verify_rollout is None else trigger.verify_rollout
        timeout_s = trigger.rollout_timeout_s or self._settings.triggers.rollout_timeout_s
        try:
            client = await self._clusters.client(cluster)
            outcome = await update_workload_image(client, ref, image, verify=verify, timeout_s=timeout_s)
        except KubeError as exc:
            if not exc.transient:
                return AttemptRecord(store.FAILED, str(exc), exc.status)
            schedule = self._settings.triggers.retry_schedule_s
            return self._retry_or_give_up(delivery, schedule, str(exc), now, exc.status, None, None)
        status = store.SUCCEEDED if outcome.succeeded else store.FAILED
        return AttemptRecord(status, outcome.detail, outcome.status_code, rolled_back_to=outcome.rolled_back_to)

    def _image(self, payload: dict[str, Any]) -> str | None:
        registry = str(payload.get("registry") or "")
        if not registry:
            local = self._settings.local_registry()
            registry = urlsplit(local.registry).netloc if local else ""
        if not registry:
            return None
        image = self._settings.triggers.image_format.format(
            registry=registry, name=payload["name"], tag=payload["tag"], digest=payload.get("digest") or ""
        )
        return image.removesuffix("@")

    # --- shared ---

    def _retry_or_give_up(
        self,
        delivery: Delivery,
        schedule: Sequence[float],
        detail: str,
        now: datetime,
        status_code: int | None,
        latency_ms: int | None,
        retry_after_s: float | None,
    ) -> AttemptRecord:
        attempts_made = delivery.attempts + 1
        delay = next_delay(schedule, attempts_made, retry_after_s=retry_after_s, jitter=random.uniform(-1, 1))
        if delay is None:
            return AttemptRecord(
                store.FAILED, f"{GAVE_UP} {attempts_made} attempts; last: {detail}", status_code, latency_ms
            )
        when = now + timedelta(seconds=delay)
        return AttemptRecord(
            store.PENDING,
            f"attempt {attempts_made} failed: {detail}; next at {when.isoformat()}",
            status_code,
            latency_ms,
            next_attempt_at=when,
        )


def fired_row(delivery: Delivery, record: AttemptRecord) -> dict[str, Any] | None:
    """The audit row of a delivery whose attempt ended it (final state), else None."""
    if record.status not in store.FINAL_STATES:
        return None
    deployment = delivery.kind == "deployment"
    fired = f"trigger {delivery.trigger_id}" if deployment else f"webhook policy {delivery.policy_id}"
    artifact = f"{delivery.namespace}/{delivery.repository}:{delivery.tag or delivery.digest or ''}"
    detail = f"{fired} ({delivery.event_type}) → {delivery.target}: {record.status}: {record.detail}"
    return system_action_row(TRIGGER_FIRED, artifact, detail[:4000])


@dataclass(frozen=True)
class _PolicySnapshot:
    """What an attempt needs of a webhook policy, secrets decrypted once."""

    id: int
    targets: tuple[dict[str, Any], ...]
    secrets: tuple[str, ...]
    auth_headers: dict[int, tuple[str, str]]
    retry_schedule_s: tuple[float, ...] | None

    @classmethod
    def of(cls, policy: WebhookPolicy, box: SecretBox) -> _PolicySnapshot:
        """Raises ``SecretError`` when a secret cannot be decrypted with the configured keys."""
        auth = {}
        for index, target in enumerate(policy.targets):
            if target.get("auth_header"):
                name, _, value = box.decrypt(target["auth_header"]).partition(":")
                auth[index] = (name.strip(), value.strip())
        return cls(
            id=policy.id,
            targets=tuple(dict(t) for t in policy.targets),
            secrets=tuple(orjson.loads(box.decrypt(policy.signing_secrets))),
            auth_headers=auth,
            retry_schedule_s=tuple(policy.retry_schedule_s) if policy.retry_schedule_s else None,
        )

    def target(self, index: int | None) -> dict[str, Any] | None:
        if index is None or not 0 <= index < len(self.targets):
            return None
        return self.targets[index]
