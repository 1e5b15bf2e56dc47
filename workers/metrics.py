"""Prometheus metrics of every role, served at ``/metrics``. Names and labels are in the README."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_RECEIVED = Counter(
    "rw_ingress_events_received_total", "Image events accepted at the ingress, by payload source.", ["source"]
)
INGRESS_REJECTED = Counter(
    "rw_ingress_requests_rejected_total", "Ingress requests refused, by HTTP status.", ["status"]
)
EVENTS_PRODUCED = Counter("rw_events_produced_total", "Messages acknowledged by the broker, by topic.", ["topic"])
EVENTS_CONSUMED = Counter(
    "rw_events_consumed_total", "Messages fully processed and ready to commit, by worker kind.", ["kind"]
)
EVENTS_DEAD_LETTERED = Counter(
    "rw_events_dead_lettered_total", "Messages sent to the dead-letter topic, by worker kind.", ["kind"]
)
RETRIES = Counter("rw_transient_retries_total", "Retries of a batch after a transient error, by worker kind.", ["kind"])
CONSUMER_LAG = Gauge(
    "rw_consumer_lag", "Highwater minus the next offset to process, per partition.", ["kind", "topic", "partition"]
)
PROCESSING_SECONDS = Histogram(
    "rw_batch_processing_seconds",
    "Time to handle one batch (effect plus history), by worker kind.",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
EVENT_LATENCY = Histogram(
    "rw_event_latency_seconds",
    "Time from the broker's record timestamp until the event's history is written, by worker kind.",
    ["kind"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)

# Triggers: deployment triggers and webhook deliveries (workers/triggers/delivery.py). `kind` is
# the delivery kind (webhook, deployment); targets, URLs and repositories are never labels.
_ATTEMPT_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30, 60, 300)
DELIVERIES = Counter(
    "rw_trigger_deliveries_total",
    "Delivery attempts by outcome: delivered, retry_scheduled, deferred (circuit open), dead_lettered "
    "(retries exhausted), failed (not retryable), disabled (410 Gone), cancelled.",
    ["kind", "outcome"],
)
DELIVERY_SECONDS = Histogram(
    "rw_trigger_attempt_seconds",
    "Duration of one delivery attempt (webhook call or workload update, rollout included), by kind.",
    ["kind"],
    buckets=_ATTEMPT_BUCKETS,
)
BREAKER_OPENS = Counter(
    "rw_trigger_breaker_opens_total",
    "Times a target's circuit breaker opened (or reopened after a failed probe), by delivery kind.",
    ["kind"],
)

# Replication (workers/replication/runner.py).
REPLICATION_JOBS = Counter(
    "rw_replication_jobs_total",
    "Replication job attempts by operation (copy, delete) and outcome: success, existed, failed, timeout, "
    "retry_scheduled.",
    ["operation", "outcome"],
)
REPLICATION_BYTES = Counter(
    "rw_replication_bytes_copied_total", "Blob bytes uploaded to destination registries by finished copies."
)
REPLICATION_BLOBS = Counter(
    "rw_replication_blobs_total",
    "Blobs handled by finished copies, by result: copied, skipped (already there), mounted (from another repository).",
    ["result"],
)

# Retention (workers/retention/runner.py, restore.py).
RETENTION_EXECUTIONS = Counter(
    "rw_retention_executions_total",
    "Retention runs by mode (apply, dry_run) and outcome: succeeded, failed, aborted (blast-radius cap).",
    ["mode", "outcome"],
)
RETENTION_DIGESTS_DELETED = Counter(
    "rw_retention_digests_deleted_total", "Manifests (digests) retention deleted from the registry."
)
RETENTION_TAGS_DELETED = Counter(
    "rw_retention_tags_deleted_total", "Tags removed with the manifests retention deleted."
)
RETENTION_TAGS_RESTORED = Counter(
    "rw_retention_tags_restored_total", "Tags re-pushed from the retention trash by a restore."
)

# Scheduler (workers/scheduler/dispatcher.py).
SLOTS_DISPATCHED = Counter(
    "rw_scheduler_slots_dispatched_total",
    "Schedule slots this replica claimed and published as a command, by command kind.",
    ["command"],
)
