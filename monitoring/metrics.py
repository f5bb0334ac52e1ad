"""Prometheus counters of the ingestion path (exposed at /metrics by the operations issue).

Labels never carry patient data: only outcome codes and ward-independent names.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

INGEST_MESSAGES = Counter(
    "portal_ingest_messages_total", "Device messages answered, by HTTP status.", ["status"]
)
INGEST_READINGS_ACCEPTED = Counter(
    "portal_ingest_readings_accepted_total", "Readings stored (replays not counted)."
)
INGEST_REJECTED = Counter(
    "portal_ingest_rejected_total", "Device messages refused, by error code.", ["code"]
)
INGEST_LATENCY = Histogram(
    "portal_ingest_latency_seconds",
    "Time from request to response on the ingestion endpoint.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
)
INGEST_GROUP_SIZE = Histogram(
    "portal_ingest_group_messages",
    "Device messages stored per transaction (grouped while the writer lanes are busy).",
    buckets=(1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64),
)
INGEST_GROUPS_SPLIT = Counter(
    "portal_ingest_groups_split_total",
    "Groups of messages rolled back and stored one by one instead, by the error's class "
    "(IntegrityError: a retried or duplicated message among them).",
    ["reason"],
)
LIVE_PUSH_FAILURES = Counter(
    "portal_live_push_failures_total",
    "Ward pushes that could not reach the channel layer (the dashboard resyncs).",
)
EVALUATION_REQUEST_FAILURES = Counter(
    "portal_evaluation_request_failures_total",
    "Alert evaluation requests the broker did not take (the catch-up evaluates them).",
)

OPEN_WEBSOCKETS = Gauge("portal_open_websockets", "Dashboard WebSockets open in this process.")
