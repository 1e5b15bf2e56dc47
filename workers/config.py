"""Configuration, resolved once at start-up.

Sources, later wins: built-in defaults → the YAML file (``--config PATH`` or ``RW_CONFIG``) →
``RW_*`` environment variables. The result is a frozen ``Settings`` passed down to every role;
no other module reads the environment. Invalid configuration raises ``ConfigError`` with one
message naming the offending key, e.g. ``RW_LISTEN (listen): expected HOST:PORT``.

Every setting is listed in ``ENV_KEYS`` (environment name → YAML path) and in the README table.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

REGION_ID = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


class ConfigError(Exception):
    """The configuration cannot be used; the message names the key."""


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class RegionSettings(_Frozen):
    """A registry this service reads from or replicates to."""

    registry: str
    username: str | None = None
    password: str | None = None
    insecure: bool = False

    @field_validator("registry")
    @classmethod
    def _registry_is_url(cls, value: str) -> str:
        if not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return value.rstrip("/")


class KafkaSettings(_Frozen):
    """Broker connection and topic layout."""

    bootstrap: str = ""
    idempotence: bool | None = None  # None: on for a real broker, off for the bundled one
    topic_prefix: str = "registry-workers"
    partitions: int = Field(default=12, ge=1, le=1024)
    replication_factor: int = Field(default=1, ge=1, le=16)
    request_timeout_ms: int = Field(default=10_000, ge=500)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=1_000, ge=100)
    max_poll_interval_ms: int = Field(default=300_000, ge=10_000)
    # How long the broker may hold a fetch when no data is waiting: the floor of event latency.
    fetch_max_wait_ms: int = Field(default=20, ge=0, le=10_000)
    # How much data a fetch waits for (up to fetch_max_wait_ms): more means fewer, larger fetches.
    fetch_min_bytes: int = Field(default=1, ge=1, le=64 * 1024 * 1024)

    @property
    def bundled(self) -> bool:
        return not self.bootstrap

    def producer_idempotence(self) -> bool:
        return (not self.bundled) if self.idempotence is None else self.idempotence


class ClusterSettings(_Frozen):
    """A Kubernetes cluster deployment triggers may update (YAML ``clusters: {id: ...}``).

    Either ``server`` plus credentials, or a ``kubeconfig`` path (optionally a ``context``).
    The map key is the SWR ``cluster_id``; ``name`` is the ``cluster_name`` it also answers to.
    """

    name: str | None = None
    server: str | None = None
    ca_file: Path | None = None
    ca_data: str | None = None  # PEM text
    token: str | None = None
    token_file: Path | None = None
    kubeconfig: Path | None = None
    context: str | None = None
    insecure: bool = False

    @field_validator("server")
    @classmethod
    def _server_is_url(cls, value: str | None) -> str | None:
        if value is not None and not re.match(r"^https?://[^/\s]+", value):
            raise ValueError("expected an http:// or https:// URL")
        return None if value is None else value.rstrip("/")

    @model_validator(mode="after")
    def _has_endpoint(self) -> ClusterSettings:
        if not self.server and not self.kubeconfig:
            raise ValueError("give either server (with token or token_file) or kubeconfig")
        return self


class TriggerSettings(_Frozen):
    """Deployment triggers and webhook delivery (YAML ``triggers:``)."""

    # Targets in these networks pass the SSRF guard (e.g. 10.0.0.0/8 for in-cluster receivers).
    allowed_networks: tuple[str, ...] = ()
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    total_timeout_s: float = Field(default=15.0, gt=0, le=600)
    # Delay before each attempt, in seconds: the Standard Webhooks schedule (first is immediate).
    retry_schedule_s: tuple[float, ...] = (0, 5, 300, 1800, 7200, 18000, 36000, 50400, 72000, 86400)
    concurrency_per_target: int = Field(default=64, ge=1, le=256)
    breaker_failures: int = Field(default=5, ge=1)
    breaker_cooldown_s: float = Field(default=30.0, gt=0)
    # How a deployment trigger writes the image: {registry} {name} {tag} {digest}.
    image_format: str = "{registry}/{name}:{tag}@{digest}"
    verify_rollout: bool = False
    rollout_timeout_s: float = Field(default=300.0, gt=0)
    # A delivery in flight stays this worker's while it renews the lease (every third of it); a
    # killed worker's deliveries are taken over after this.
    lease_s: float = Field(default=30.0, ge=3, le=3600)

    @field_validator("allowed_networks", mode="before")
    @classmethod
    def _split_networks(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("allowed_networks")
    @classmethod
    def _networks(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        import ipaddress

        for network in value:
            try:
                ipaddress.ip_network(network, strict=False)
            except ValueError:
                raise ValueError(f"{network!r} is not a CIDR network such as 127.0.0.0/8") from None
        return value

    @field_validator("retry_schedule_s")
    @classmethod
    def _schedule(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value or any(delay < 0 for delay in value):
            raise ValueError("expected at least one non-negative delay")
        return value

    @field_validator("image_format")
    @classmethod
    def _image_format(cls, value: str) -> str:
        try:
            value.format(registry="r", name="n", tag="t", digest="d")
        except (KeyError, IndexError, ValueError) as exc:
            raise ValueError(f"unknown placeholder {exc}; use {{registry}} {{name}} {{tag}} {{digest}}") from None
        return value


class ReplicationSettings(_Frozen):
    """Copy jobs and reconciliation (YAML ``replication:``)."""

    concurrency: int = Field(default=4, ge=1, le=64)  # jobs at once per worker process
    job_timeout_s: float = Field(default=3600.0, gt=0)
    reconcile_cron: str = "7 * * * *"  # compare source and destination tags, repair drift
    # how long a job stays a worker's after its last progress report; a worker killed mid-copy
    # hands its job (and its upload checkpoints) to another after this
    lease_s: float = Field(default=60.0, ge=1)

    @field_validator("reconcile_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _crontab(value)


class RetentionSettings(_Frozen):
    """Retention runs (YAML ``retention:``)."""

    cron: str = "30 2 * * *"  # when basic-edition rules run (they also run right after a change)
    max_deletions: int = Field(default=1000, ge=0)  # blast-radius cap per run
    max_percent: float = Field(default=90.0, ge=0, le=100)  # of one repository's digests per run
    grace_days: int = Field(default=7, ge=0)  # deleted manifests kept for restore
    rollback_window: int = Field(default=3, ge=0)  # previous digests per workload kept as in use
    deletions_per_second: float = Field(default=20.0, gt=0)  # per registry
    concurrency: int = Field(default=4, ge=1, le=64)

    @field_validator("cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _crontab(value)


def _crontab(value: str) -> str:
    from apscheduler.triggers.cron import CronTrigger

    try:
        CronTrigger.from_crontab(value)
    except ValueError as exc:
        raise ValueError(f"expected a 5-field crontab expression: {exc}") from None
    return value


class SecretSettings(_Frozen):
    """Keys that encrypt secrets at rest (Fernet). The first encrypts; all decrypt (rotation)."""

    keys: tuple[str, ...] = ()

    @field_validator("keys", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return tuple(part.strip() for part in value.split(",") if part.strip())
        return value

    @field_validator("keys")
    @classmethod
    def _fernet_keys(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from cryptography.fernet import Fernet

        for index, key in enumerate(value):
            try:
                Fernet(key)
            except ValueError:
                raise ValueError(f"key {index + 1} is not a Fernet key (32 url-safe base64 bytes)") from None
        return value


class WorkerSettings(_Frozen):
    """Tunables of the consumer runtime shared by every worker kind."""

    # Records per batch (one transaction). Each batch costs the database a fixed overhead (a
    # transaction, its planning): bench/pipeline.py made 38k inventory events/s with 500 and
    # 57-64k with 2,000, on 2 cores. Batches only gather what is queued, so light load keeps them small.
    max_batch: int = Field(default=2_000, ge=1, le=100_000)
    concurrency: int = Field(default=2, ge=1, le=64)  # batches in flight per worker kind
    # The inventory's batches are database writes only: more in flight keep both the event loop
    # and Postgres busy (bench/pipeline.py: 8 gave ~20 % more events/s than 4 on 2 cores).
    inventory_concurrency: int = Field(default=8, ge=1, le=64)
    max_buffered_per_partition: int = Field(default=2_000, ge=1)
    commit_interval_ms: int = Field(default=500, ge=10)
    drain_timeout_s: float = Field(default=20.0, gt=0)


class Settings(_Frozen):
    """Everything a role needs, validated."""

    listen: str = "127.0.0.1:8080"
    data_dir: Path = Path("./data")
    database_url: str = ""
    region: str = "region-a"
    ingress_token: str | None = None
    admin_access_key: str | None = None
    admin_secret_key: str | None = None
    project_id: str = "default"
    instance_id: str = "local"
    ingress_max_body: int = Field(default=1024 * 1024, ge=1024)
    log_level: str = "INFO"
    log_format: str = "json"  # one JSON object per line; "text" for humans
    regions: dict[str, RegionSettings] = Field(default_factory=dict)
    clusters: dict[str, ClusterSettings] = Field(default_factory=dict)
    triggers: TriggerSettings = TriggerSettings()
    replication: ReplicationSettings = ReplicationSettings()
    retention: RetentionSettings = RetentionSettings()
    secrets: SecretSettings = SecretSettings()
    kafka: KafkaSettings = KafkaSettings()
    worker: WorkerSettings = WorkerSettings()
    history_retention_days: int = Field(default=7, ge=1)
    audit_retention_days: int = Field(default=7, ge=1)  # audit trail rows, swept with the history
    sweep_cron: str = "17 3 * * *"

    @field_validator("sweep_cron")
    @classmethod
    def _cron(cls, value: str) -> str:
        return _crontab(value)

    @field_validator("listen")
    @classmethod
    def _listen_is_host_port(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("expected HOST:PORT, e.g. 127.0.0.1:8080")
        return value

    @field_validator("region")
    @classmethod
    def _region_id(cls, value: str) -> str:
        if not REGION_ID.match(value):
            raise ValueError("expected a lowercase region id such as region-a")
        return value

    @field_validator("regions")
    @classmethod
    def _region_ids(cls, value: dict[str, RegionSettings]) -> dict[str, RegionSettings]:
        for name in value:
            if not REGION_ID.match(name):
                raise ValueError(f"region id {name!r} must be lowercase letters, digits and '-'")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if not value:
            return value
        if value.startswith(("postgresql://", "postgres://")):
            return "postgresql+asyncpg://" + value.split("://", 1)[1]
        if not value.startswith(("postgresql+asyncpg://", "sqlite+aiosqlite://")):
            raise ValueError("expected postgresql+asyncpg://..., postgresql://... or sqlite+aiosqlite:///PATH")
        return value

    @field_validator("log_level")
    @classmethod
    def _log_level(cls, value: str) -> str:
        if value.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
            raise ValueError("expected DEBUG, INFO, WARNING or ERROR")
        return value.upper()

    @field_validator("log_format")
    @classmethod
    def _log_format(cls, value: str) -> str:
        if value.lower() not in {"json", "text"}:
            raise ValueError("expected json or text")
        return value.lower()

    @model_validator(mode="after")
    def _default_database(self) -> Settings:
        if not self.database_url:
            path = (self.data_dir / "registry-workers.db").resolve()
            object.__setattr__(self, "database_url", f"sqlite+aiosqlite:///{path}")
        return self

    @property
    def listen_host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def listen_port(self) -> int:
        return int(self.listen.rpartition(":")[2])

    @property
    def uses_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def local_registry(self) -> RegionSettings | None:
        """The registry whose notifications arrive at this ingress, when configured."""
        return self.regions.get(self.region)


# Environment variable → dotted path in the YAML document.
ENV_KEYS: dict[str, str] = {
    "RW_LISTEN": "listen",
    "RW_DATA_DIR": "data_dir",
    "RW_DATABASE_URL": "database_url",
    "RW_REGION": "region",
    "RW_INGRESS_TOKEN": "ingress_token",
    "RW_ADMIN_ACCESS_KEY": "admin_access_key",
    "RW_ADMIN_SECRET_KEY": "admin_secret_key",
    "RW_PROJECT_ID": "project_id",
    "RW_INSTANCE_ID": "instance_id",
    "RW_INGRESS_MAX_BODY": "ingress_max_body",
    "RW_LOG_LEVEL": "log_level",
    "RW_LOG_FORMAT": "log_format",
    "RW_HISTORY_RETENTION_DAYS": "history_retention_days",
    "RW_AUDIT_RETENTION_DAYS": "audit_retention_days",
    "RW_SWEEP_CRON": "sweep_cron",
    "RW_KAFKA_BOOTSTRAP": "kafka.bootstrap",
    "RW_KAFKA_IDEMPOTENCE": "kafka.idempotence",
    "RW_KAFKA_TOPIC_PREFIX": "kafka.topic_prefix",
    "RW_KAFKA_PARTITIONS": "kafka.partitions",
    "RW_KAFKA_REPLICATION_FACTOR": "kafka.replication_factor",
    "RW_KAFKA_SESSION_TIMEOUT_MS": "kafka.session_timeout_ms",
    "RW_KAFKA_HEARTBEAT_INTERVAL_MS": "kafka.heartbeat_interval_ms",
    "RW_KAFKA_MAX_POLL_INTERVAL_MS": "kafka.max_poll_interval_ms",
    "RW_KAFKA_FETCH_MAX_WAIT_MS": "kafka.fetch_max_wait_ms",
    "RW_KAFKA_FETCH_MIN_BYTES": "kafka.fetch_min_bytes",
    "RW_WEBHOOK_ALLOWED_NETWORKS": "triggers.allowed_networks",
    "RW_SECRET_KEYS": "secrets.keys",
    "RW_TRIGGER_VERIFY_ROLLOUT": "triggers.verify_rollout",
    "RW_TRIGGER_IMAGE_FORMAT": "triggers.image_format",
    "RW_REPLICATION_CONCURRENCY": "replication.concurrency",
    "RW_REPLICATION_RECONCILE_CRON": "replication.reconcile_cron",
    "RW_RETENTION_CRON": "retention.cron",
    "RW_RETENTION_MAX_DELETIONS": "retention.max_deletions",
    "RW_RETENTION_MAX_PERCENT": "retention.max_percent",
    "RW_RETENTION_GRACE_DAYS": "retention.grace_days",
    "RW_WORKER_MAX_BATCH": "worker.max_batch",
    "RW_WORKER_CONCURRENCY": "worker.concurrency",
    "RW_WORKER_INVENTORY_CONCURRENCY": "worker.inventory_concurrency",
    "RW_WORKER_MAX_BUFFERED": "worker.max_buffered_per_partition",
    "RW_WORKER_COMMIT_INTERVAL_MS": "worker.commit_interval_ms",
    "RW_WORKER_DRAIN_TIMEOUT_S": "worker.drain_timeout_s",
}


def load_settings(config_path: str | Path | None = None, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve the settings once. Called by the CLI before any role starts.

    Raises ``ConfigError`` naming the key when the file is unreadable or a value is invalid.
    """
    env = os.environ if environ is None else environ
    path = config_path or env.get("RW_CONFIG") or None
    document = _read_yaml(Path(path)) if path else {}
    for env_name, dotted in ENV_KEYS.items():
        if env_name in env:
            _set_dotted(document, dotted, env[env_name])
    try:
        return Settings.model_validate(document)
    except ValidationError as exc:
        raise ConfigError(_describe(exc)) from None


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"RW_CONFIG: cannot read {path}: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"RW_CONFIG: {path} is not valid YAML: {exc}") from None
    if loaded is None:
        return {}
    if not isinstance(loaded, dict):
        raise ConfigError(f"RW_CONFIG: {path} must hold a mapping at the top level")
    return loaded


def _set_dotted(document: dict[str, Any], dotted: str, value: str) -> None:
    *parents, leaf = dotted.split(".")
    node = document
    for key in parents:
        child = node.get(key)
        if not isinstance(child, dict):
            child = {}
            node[key] = child
        node = child
    node[leaf] = value


def _describe(exc: ValidationError) -> str:
    error = exc.errors()[0]
    dotted = ".".join(str(part) for part in error["loc"])
    env_name = next((name for name, key in ENV_KEYS.items() if key == dotted), None)
    key = f"{env_name} ({dotted})" if env_name else dotted
    message = str(error["msg"]).removeprefix("Value error, ")
    if error["type"] == "extra_forbidden":
        message = "unknown setting"
    more = len(exc.errors()) - 1
    suffix = f" (and {more} more problem{'s' if more > 1 else ''})" if more else ""
    return f"invalid configuration: {key}: {message}{suffix}"
