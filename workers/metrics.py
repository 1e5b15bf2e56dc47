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
