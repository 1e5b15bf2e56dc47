"""Typed SQLAlchemy models. Every schema change comes with an Alembic revision."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.sql.elements import ColumnElement

from workers.db.types import BigIntId, UtcDateTime

NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)


# Tag rows are exactly the rows with a tag (``kind = 'tag'``). The partial indexes use this
# predicate, and queries for tags select with ``is_tag_row`` so the planner can use them (a
# ``kind = $1`` parameter would not prove the predicate to a generic plan).
TAG_ROWS_ONLY: dict[str, Any] = {"postgresql_where": text("tag IS NOT NULL"), "sqlite_where": text("tag IS NOT NULL")}


def is_tag_row(tag: ColumnElement[str | None] | Mapped[str | None]) -> ColumnElement[bool]:
    """``tag`` is the ``artifacts.tag`` column of a table, model or alias: selects tag rows."""
    return tag.is_not(None)


class Artifact(Base):
    """What one region's registry holds: one row per tag and one per manifest or blob digest.

    ``ref`` is the tag for ``kind='tag'`` rows and the digest otherwise (tags cannot contain
    ``:``, digests always do, so the two never collide). ``event_at`` is the time of the newest
    push or delete applied to the row: older events arriving late change nothing.
    """

    __tablename__ = "artifacts"
    __table_args__ = (
        UniqueConstraint("region", "name", "ref"),
        # Both secondary indexes hold tag rows only (see migration 0012): only tags are listed
        # or looked up by digest, and blob and manifest rows, most of the table, skip them.
        Index("ix_artifacts_listing", "region", "namespace", "repository", **TAG_ROWS_ONLY),
        # Digest first: (region, name) lookups belong to the unique key (see migration 0011).
        Index("ix_artifacts_digest", "digest", "region", "name", **TAG_ROWS_ONLY),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    region: Mapped[str] = mapped_column(String(64))
    name: Mapped[str] = mapped_column(String(255))
    namespace: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(255))
    ref: Mapped[str] = mapped_column(String(160))
    kind: Mapped[str] = mapped_column(String(16))
    tag: Mapped[str | None] = mapped_column(String(128))
    digest: Mapped[str | None] = mapped_column(String(160))
    media_type: Mapped[str | None] = mapped_column(String(255))
    size: Mapped[int | None] = mapped_column(BigInteger)
    pushed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    pulled_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    deleted_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    event_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ImageEventRecord(Base):
    """Every image event a worker consumed: the inventory's history and its duplicate filter."""

    __tablename__ = "image_events"
    # BRIN on Postgres: rows arrive in recorded_at order, and a BRIN index costs next to
    # nothing per insert while still serving the retention sweep's range delete.
    __table_args__ = (Index("ix_image_events_recorded_at", "recorded_at", postgresql_using="brin"),)

    id: Mapped[str] = mapped_column(String(300), primary_key=True)
    source: Mapped[str] = mapped_column(String(32))
    region: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(16))
    kind: Mapped[str] = mapped_column(String(16))
    name: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str | None] = mapped_column(String(128))
    digest: Mapped[str | None] = mapped_column(String(160))
    actor: Mapped[str | None] = mapped_column(String(255))
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    recorded_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ScheduleSlot(Base):
    """One fire time of one schedule; the primary key lets exactly one scheduler dispatch it."""

    __tablename__ = "schedule_slots"

    id: Mapped[str] = mapped_column(String(200), primary_key=True)
    job: Mapped[str] = mapped_column(String(100))
    slot_at: Mapped[datetime] = mapped_column(UtcDateTime)
    dispatched_at: Mapped[datetime] = mapped_column(UtcDateTime)
    completed_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class Namespace(Base):
    """An SWR namespace (the first segment of a repository name), numbered for the API."""

    __tablename__ = "namespaces"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class DeploymentTrigger(Base):
    """An SWR trigger: update a workload's image when a matching tag of the repository is pushed."""

    __tablename__ = "deployment_triggers"
    __table_args__ = (UniqueConstraint("namespace", "repository", "name"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    app_type: Mapped[str] = mapped_column(String(32))
    application: Mapped[str] = mapped_column(String(253))
    cluster_id: Mapped[str] = mapped_column(String(128))
    cluster_name: Mapped[str] = mapped_column(String(128))
    cluster_ns: Mapped[str] = mapped_column(String(253))
    condition: Mapped[str] = mapped_column(String(1024))
    container: Mapped[str] = mapped_column(String(253))
    enabled: Mapped[bool] = mapped_column(Boolean)
    trigger_mode: Mapped[str] = mapped_column(String(16))
    trigger_type: Mapped[str] = mapped_column(String(16))
    verify_rollout: Mapped[bool | None] = mapped_column(Boolean)  # None: the configured default
    rollout_timeout_s: Mapped[float | None] = mapped_column(Float)
    creator_name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class WebhookPolicy(Base):
    """An SWR enterprise webhook policy of one namespace; secrets are stored encrypted."""

    __tablename__ = "webhook_policies"
    __table_args__ = (UniqueConstraint("namespace", "name"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(255))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text)
    targets: Mapped[list[dict[str, Any]]] = mapped_column(JSON)  # auth_header encrypted
    scope_rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    event_types: Mapped[list[str]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean)
    signing_secrets: Mapped[str] = mapped_column(Text)  # encrypted JSON list, newest first
    retry_schedule_s: Mapped[list[float] | None] = mapped_column(JSON)
    creator: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class Delivery(Base):
    """One execution of a trigger (or of one webhook target) for one image event.

    ``key`` is deterministic (``trigger:{id}:{event}``, ``webhook:{policy}:{target}:{event}``)
    and unique: a redelivered Kafka message or a registry retry never fires twice. Final
    states (``succeeded``, ``failed``, ``cancelled``) are final until an explicit replay.
    """

    __tablename__ = "deliveries"
    __table_args__ = (
        UniqueConstraint("key"),
        Index("ix_deliveries_due", "status", "next_attempt_at"),
        Index("ix_deliveries_trigger", "trigger_id", "created_at"),
        Index("ix_deliveries_policy", "policy_id", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(400))
    kind: Mapped[str] = mapped_column(String(16))  # "deployment" | "webhook"
    trigger_id: Mapped[int | None] = mapped_column(BigInteger)
    policy_id: Mapped[int | None] = mapped_column(BigInteger)
    target_index: Mapped[int | None] = mapped_column(Integer)
    target: Mapped[str] = mapped_column(String(2048))
    event_id: Mapped[str] = mapped_column(String(300))
    event_type: Mapped[str] = mapped_column(String(32))
    namespace: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str | None] = mapped_column(String(128))
    digest: Mapped[str | None] = mapped_column(String(160))
    payload: Mapped[str] = mapped_column(Text)
    content_type: Mapped[str] = mapped_column(String(64))
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    last_status_code: Mapped[int | None] = mapped_column(Integer)
    latency_ms: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text)
    rolled_back_to: Mapped[str | None] = mapped_column(String(1024))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class SyncRule(Base):
    """An SWR automatic sync rule: every push of the repository is copied to a region/namespace."""

    __tablename__ = "sync_rules"
    __table_args__ = (
        UniqueConstraint("namespace", "repository", "remote_region", "remote_namespace", name="uq_sync_rules_target"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(255))
    remote_region: Mapped[str] = mapped_column(String(64))
    remote_namespace: Mapped[str] = mapped_column(String(255))
    sync_auto: Mapped[bool] = mapped_column(Boolean)
    override: Mapped[bool] = mapped_column(Boolean)
    creator: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReplicationJob(Base):
    """One image copy (SWR ``SyncJob``): queued, leased by a replication worker, finished once.

    ``key`` is deterministic for event-driven jobs (``auto:{rule}:{event}``) so a redelivered
    event never copies twice; manual and reconcile jobs get fresh keys.
    """

    __tablename__ = "replication_jobs"
    __table_args__ = (
        UniqueConstraint("key"),
        Index("ix_replication_jobs_due", "status", "next_attempt_at"),
        Index("ix_replication_jobs_repository", "namespace", "repository", "created_at"),
        Index("ix_replication_jobs_execution", "execution_id"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(400))
    trigger: Mapped[str] = mapped_column(String(16))  # auto | manual | policy | reconcile
    operation: Mapped[str] = mapped_column(String(16), default="copy")  # copy | delete
    rule_id: Mapped[int | None] = mapped_column(BigInteger)
    policy_id: Mapped[int | None] = mapped_column(BigInteger)
    execution_id: Mapped[int | None] = mapped_column(BigInteger)
    source_region: Mapped[str] = mapped_column(String(64))
    namespace: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str | None] = mapped_column(String(160))
    remote_region: Mapped[str] = mapped_column(String(64))
    remote_namespace: Mapped[str] = mapped_column(String(255))
    override: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))
    attempts: Mapped[int] = mapped_column(Integer)
    next_attempt_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    lease_until: Mapped[datetime | None] = mapped_column(UtcDateTime)
    bytes_total: Mapped[int] = mapped_column(BigInteger)
    bytes_done: Mapped[int] = mapped_column(BigInteger)
    blobs_copied: Mapped[int] = mapped_column(Integer)
    blobs_skipped: Mapped[int] = mapped_column(Integer)
    blobs_mounted: Mapped[int] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text)
    operator_id: Mapped[str] = mapped_column(String(255))
    operator_name: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)
    started_at: Mapped[datetime | None] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class UploadCheckpoint(Base):
    """Where an interrupted chunked upload stopped, so a restarted job resumes instead of restarting."""

    __tablename__ = "upload_checkpoints"

    key: Mapped[str] = mapped_column(String(600), primary_key=True)  # registry|repository|digest
    location: Mapped[str] = mapped_column(Text)
    offset: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReplicationRegistry(Base):
    """The numeric id the SWR enterprise API uses for a configured region's registry."""

    __tablename__ = "replication_registries"
    __table_args__ = (UniqueConstraint("region"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    region: Mapped[str] = mapped_column(String(64))


class ReplicationPolicy(Base):
    """An SWR enterprise replication policy: filters, trigger (manual, scheduled, event based)."""

    __tablename__ = "replication_policies"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str] = mapped_column(Text)
    src_registry_id: Mapped[int] = mapped_column(BigInteger)
    dest_registry_id: Mapped[int] = mapped_column(BigInteger)
    dest_namespace: Mapped[str] = mapped_column(String(255))
    filters: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    repo_scope_mode: Mapped[str] = mapped_column(String(32))
    trigger_type: Mapped[str] = mapped_column(String(16))  # manual | scheduled | event_based
    cron: Mapped[str] = mapped_column(String(128))
    override: Mapped[bool] = mapped_column(Boolean)
    enabled: Mapped[bool] = mapped_column(Boolean)
    replicate_deletion: Mapped[bool] = mapped_column(Boolean)
    creator: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class ReplicationExecution(Base):
    """One run of a replication policy; its tasks are the ``replication_jobs`` rows carrying its id."""

    __tablename__ = "replication_executions"
    __table_args__ = (Index("ix_replication_executions_policy", "policy_id", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    policy_id: Mapped[int] = mapped_column(BigInteger)
    trigger: Mapped[str] = mapped_column(String(16))  # manual | scheduled | event_based
    enumerated: Mapped[bool] = mapped_column(Boolean)  # every task has been queued
    stopped: Mapped[bool] = mapped_column(Boolean)
    status_text: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


# --- IAM (revision 0007): principals, policies, SWR grants, the audit trail ---------------------


class IamUser(Base):
    """A user of the management API. ``id`` is 32 hex characters (SWR's ``UserAuth.user_id``)."""

    __tablename__ = "iam_users"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class IamGroup(Base):
    """A set of users that policies can be attached to."""

    __tablename__ = "iam_groups"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    description: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class IamGroupMember(Base):
    __tablename__ = "iam_group_members"
    __table_args__ = (Index("ix_iam_group_members_user_id", "user_id"),)

    group_id: Mapped[str] = mapped_column(String(64), ForeignKey("iam_groups.id", ondelete="CASCADE"), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), ForeignKey("iam_users.id", ondelete="CASCADE"), primary_key=True)


class IamAccessKey(Base):
    """An AK/SK pair of a user. The SK is kept Fernet-encrypted: verifying a signature needs it."""

    __tablename__ = "iam_access_keys"
    __table_args__ = (Index("ix_iam_access_keys_user_id", "user_id"),)

    access_key: Mapped[str] = mapped_column(String(64), primary_key=True)
    user_id: Mapped[str] = mapped_column(String(64), ForeignKey("iam_users.id", ondelete="CASCADE"))
    secret: Mapped[str] = mapped_column(Text)  # SecretBox token
    enabled: Mapped[bool] = mapped_column(Boolean)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class IamPolicy(Base):
    """A custom policy document (validated by ``workers.iam.policy.parse_policy`` when saved)."""

    __tablename__ = "iam_policies"
    __table_args__ = (UniqueConstraint("name"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(128))
    description: Mapped[str] = mapped_column(String(255))
    document: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class IamAttachment(Base):
    """A policy attached to a user or a group, by name: custom and system policies alike."""

    __tablename__ = "iam_attachments"
    __table_args__ = (
        UniqueConstraint("principal_type", "principal_id", "policy_name"),
        Index("ix_iam_attachments_policy_name", "policy_name"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    principal_type: Mapped[str] = mapped_column(String(8))  # user | group
    principal_id: Mapped[str] = mapped_column(String(64))
    policy_name: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class IamGrant(Base):
    """SWR's own permission (``UserAuth.auth`` 1/3/7) of a user on a namespace or one repository."""

    __tablename__ = "iam_grants"
    __table_args__ = (
        UniqueConstraint("user_id", "namespace", "repository"),
        Index("ix_iam_grants_target", "namespace", "repository"),
    )

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    user_id: Mapped[str] = mapped_column(String(64), ForeignKey("iam_users.id", ondelete="CASCADE"))
    namespace: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(255))  # "" for a grant on the whole namespace
    auth: Mapped[int] = mapped_column(Integer)
    creator: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class AuditEvent(Base):
    """One management call (``kind='api'``) or one action a worker took (``kind='system'``)."""

    __tablename__ = "audit_events"
    __table_args__ = (Index("ix_audit_events_occurred_at", "occurred_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    occurred_at: Mapped[datetime] = mapped_column(UtcDateTime)
    kind: Mapped[str] = mapped_column(String(8))
    request_id: Mapped[str] = mapped_column(String(64))
    method: Mapped[str] = mapped_column(String(8))
    route: Mapped[str] = mapped_column(String(512))  # the matched template
    path: Mapped[str] = mapped_column(String(2048))
    principal: Mapped[str] = mapped_column(String(255))  # user name; "system" for workers
    principal_id: Mapped[str] = mapped_column(String(64))
    access_key: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(128))
    resource: Mapped[str] = mapped_column(String(1024))
    source_ip: Mapped[str] = mapped_column(String(64))
    status: Mapped[int | None] = mapped_column(Integer)  # HTTP status of API calls
    decision: Mapped[str] = mapped_column(String(16))  # allow | admin | explicit-deny | implicit-deny | ...
    detail: Mapped[str] = mapped_column(Text)


class RetentionPolicy(Base):
    """A retention rule set: SWR basic (one repository) or enterprise (a namespace, scoped by selectors)."""

    __tablename__ = "retention_policies"
    __table_args__ = (Index("ix_retention_policies_scope", "namespace", "repository"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    edition: Mapped[str] = mapped_column(String(16))  # basic | enterprise
    namespace: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str | None] = mapped_column(String(255))  # None: every repository of the namespace
    name: Mapped[str] = mapped_column(String(255))
    algorithm: Mapped[str] = mapped_column(String(16))
    rules: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    enabled: Mapped[bool] = mapped_column(Boolean)
    cron: Mapped[str] = mapped_column(String(128))
    creator: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RetentionRun(Base):
    """One execution of a retention policy: its plan (every digest explained) and what it did."""

    __tablename__ = "retention_runs"
    __table_args__ = (UniqueConstraint("key"), Index("ix_retention_runs_policy", "policy_id", "created_at"))

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    key: Mapped[str] = mapped_column(String(300))  # retention:{policy}:{slot or request}
    policy_id: Mapped[int] = mapped_column(BigInteger)
    trigger: Mapped[str] = mapped_column(String(16))  # saved | schedule | manual
    dry_run: Mapped[bool] = mapped_column(Boolean)
    status: Mapped[str] = mapped_column(String(16))  # pending | running | succeeded | failed | aborted
    plan: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    counts: Mapped[dict[str, Any]] = mapped_column(JSON)
    detail: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class RetentionLog(Base):
    """One deleted tag (SWR ``RetentionLog``)."""

    __tablename__ = "retention_logs"
    __table_args__ = (Index("ix_retention_logs_repository", "namespace", "repo", "created_at"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    retention_id: Mapped[int] = mapped_column(BigInteger)
    run_id: Mapped[int] = mapped_column(BigInteger)
    namespace: Mapped[str] = mapped_column(String(255))
    repo: Mapped[str] = mapped_column(String(255))
    tag: Mapped[str] = mapped_column(String(128))
    digest: Mapped[str] = mapped_column(String(160))
    rule_type: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RetentionTrash(Base):
    """A deleted manifest and its tags, kept for the grace period so ``restore`` can re-push it."""

    __tablename__ = "retention_trash"
    __table_args__ = (Index("ix_retention_trash_repository", "namespace", "repository", "digest"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    run_id: Mapped[int] = mapped_column(BigInteger)
    region: Mapped[str] = mapped_column(String(64))
    namespace: Mapped[str] = mapped_column(String(255))
    repository: Mapped[str] = mapped_column(String(255))
    digest: Mapped[str] = mapped_column(String(160))
    media_type: Mapped[str] = mapped_column(String(255))
    manifest: Mapped[str] = mapped_column(Text)  # base64 of the exact bytes
    tags: Mapped[list[str]] = mapped_column(JSON)
    deleted_at: Mapped[datetime] = mapped_column(UtcDateTime)
    expires_at: Mapped[datetime] = mapped_column(UtcDateTime)
    restored_at: Mapped[datetime | None] = mapped_column(UtcDateTime)


class ImmutableRule(Base):
    """An SWR enterprise immutable tag rule of a namespace: retention never deletes what it matches.

    ``tag_selectors`` and ``scope_selectors`` are the validated wire form (``RuleSelector``s).
    """

    __tablename__ = "immutable_rules"
    __table_args__ = (Index("ix_immutable_rules_namespace", "namespace"),)

    id: Mapped[int] = mapped_column(BigIntId, primary_key=True, autoincrement=True)
    namespace: Mapped[str] = mapped_column(String(255))
    priority: Mapped[int] = mapped_column(Integer)
    disabled: Mapped[bool] = mapped_column(Boolean)
    action: Mapped[str] = mapped_column(String(32))
    template: Mapped[str] = mapped_column(String(64))
    tag_selectors: Mapped[list[dict[str, Any]]] = mapped_column(JSON)
    scope_selectors: Mapped[dict[str, Any]] = mapped_column(JSON)
    creator: Mapped[str] = mapped_column(String(255))
    created_at: Mapped[datetime] = mapped_column(UtcDateTime)
    updated_at: Mapped[datetime] = mapped_column(UtcDateTime)


class RuleVersion(Base):
    """A counter bumped with every change to a kind of rule, so workers reload only when it moved."""

    __tablename__ = "rule_versions"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)  # e.g. "triggers"
    version: Mapped[int] = mapped_column(BigInteger)
