"""Table definitions. Change them only together with a new migration in ``migrations/versions``."""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

deployments = sa.Table(
    "deployments",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("revision", sa.Integer, nullable=False),
    sa.Column("doc", sa.Text, nullable=False),  # JSON: champion, canary, shadows, header, salt
    sa.Column("updated_at", sa.Float, nullable=False),
)

audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("actor", sa.String(128), nullable=False),
    sa.Column("role", sa.String(16), nullable=True),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(256), nullable=False),
    sa.Column("before", sa.Text, nullable=True),
    sa.Column("after", sa.Text, nullable=True),
    sa.Column("request_id", sa.String(128), nullable=True),
    sa.Column("outcome", sa.String(32), nullable=False),
    sa.Column("detail", sa.Text, nullable=True),
)

# --- Monitor state (written only by the Monitor, in one transaction with its checkpoints)

monitor_checkpoints = sa.Table(
    "monitor_checkpoints",
    metadata,
    sa.Column("stream", sa.String(128), primary_key=True),  # {worker}-{pid}-{start_ns}
    # a segment number; on the nats backend (stream = a partition's subject) the last
    # JetStream stream sequence consumed
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("offset", sa.BigInteger, nullable=False),  # bytes consumed in that segment
    sa.Column("updated_at", sa.Float, nullable=False),
)

monitor_stats = sa.Table(
    "monitor_stats",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("version", sa.String(63), primary_key=True),
    sa.Column("variant", sa.String(16), primary_key=True),
    sa.Column("doc", sa.Text, nullable=False),  # JSON: quality.stats.VersionStats.to_dict()
    sa.Column("updated_at", sa.Float, nullable=False),
)

monitor_state = sa.Table(
    "monitor_state",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),  # e.g. "status", "counters"
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

prediction_index = sa.Table(
    "prediction_index",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("version", sa.String(63), nullable=False),
    sa.Column("variant", sa.String(16), nullable=False),
    sa.Column("ts", sa.Float, nullable=False, index=True),
    sa.Column("outputs", sa.Text, nullable=False),  # JSON list, one answer per row
    sa.Column("labeled_rows", sa.Text, nullable=True),  # JSON list of rows already labelled
    # JSON {row: label or value} of the labels joined to this answer: an answer of the same
    # request indexed later (a shadow's) is scored with them
    sa.Column("labels", sa.Text, nullable=True),
)

feedback_pending = sa.Table(
    "feedback_pending",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False, index=True),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("doc", sa.Text, nullable=False),  # the feedback record's data
    sa.Column("received", sa.Float, nullable=False),
)

# --- Drift (written by the Monitor; alarms acknowledged and rebaselines requested by operators)

drift_state = sa.Table(
    "drift_state",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("version", sa.String(63), primary_key=True),
    sa.Column("doc", sa.Text, nullable=False),  # detector snapshot + signal state + PSI
    sa.Column("updated_at", sa.Float, nullable=False),
)

drift_alarms = sa.Table(
    "drift_alarms",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("version", sa.String(63), nullable=False),
    sa.Column("signal", sa.String(32), nullable=False),
    sa.Column("doc", sa.Text, nullable=False),  # monitoring.drift.base.DriftAlarm
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("acknowledged_at", sa.Float, nullable=True),
    sa.Column("acknowledged_by", sa.String(128), nullable=True),
    sa.Index("ix_drift_alarms_model_version", "model", "version"),
)

drift_references = sa.Table(
    "drift_references",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("version", sa.String(63), primary_key=True),
    sa.Column("doc", sa.Text, nullable=False),  # adopted live rows and outputs, source
    sa.Column("created_at", sa.Float, nullable=False),
)

drift_requests = sa.Table(
    "drift_requests",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("version", sa.String(63), nullable=False),
    sa.Column("action", sa.String(32), nullable=False),  # rebaseline
    sa.Column("rows", sa.Integer, nullable=False),
    sa.Column("requested_by", sa.String(128), nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("done_at", sa.Float, nullable=True),
    sa.Column("outcome", sa.Text, nullable=True),
)

# --- Retraining webhooks: the outbox, its deliveries and every attempt

webhook_events = sa.Table(
    "webhook_events",
    metadata,
    sa.Column("event_id", sa.String(160), primary_key=True),  # the webhook-id, stable
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("model", sa.String(63), nullable=True),
    sa.Column("reason", sa.String(32), nullable=True),
    sa.Column("payload", sa.Text, nullable=False),
    sa.Column("created_at", sa.Float, nullable=False),
)

webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("event_id", sa.String(160), nullable=False),
    sa.Column("target", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),  # pending | delivered | dead
    sa.Column("attempts", sa.Integer, nullable=False, server_default="0"),
    sa.Column("next_attempt_at", sa.Float, nullable=True),
    sa.Column("last_status", sa.Integer, nullable=True),
    sa.Column("last_error", sa.Text, nullable=True),
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.UniqueConstraint("event_id", "target", name="uq_webhook_delivery"),
    sa.Index("ix_webhook_deliveries_status", "status", "next_attempt_at"),
)

webhook_attempts = sa.Table(
    "webhook_attempts",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("delivery_id", sa.Integer, nullable=False, index=True),
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("ts", sa.Float, nullable=False),
    sa.Column("status_code", sa.Integer, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("duration_seconds", sa.Float, nullable=False),
)

webhook_targets = sa.Table(
    "webhook_targets",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("disabled_at", sa.Float, nullable=True),  # a 410 Gone disables a target
    sa.Column("reason", sa.Text, nullable=True),
)

# --- Progressive delivery: one rollout per model (state machine + baselines), by the Monitor

rollouts = sa.Table(
    "rollouts",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("doc", sa.Text, nullable=False),  # spec, state, baselines, last analysis
    sa.Column("updated_at", sa.Float, nullable=False),
    # every write is a compare-and-set on it (store.rollouts.StaleRollout)
    sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
)

# the Monitor's per-minute history for the console (cumulative counters per minute)
monitor_history = sa.Table(
    "monitor_history",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("version", sa.String(63), primary_key=True),
    sa.Column("variant", sa.String(16), primary_key=True),
    sa.Column("minute", sa.BigInteger, primary_key=True),  # unix time // 60
    sa.Column("requests", sa.BigInteger, nullable=False),  # cumulative
    sa.Column("errors", sa.BigInteger, nullable=False),
    sa.Column("rows", sa.BigInteger, nullable=False),
    sa.Column("latency", sa.Text, nullable=False),  # JSON: counts <= each bound, then all
    sa.Column("updated_at", sa.Float, nullable=False),
)

# --- Experiments on business KPIs (monitoring.experiments)

# per (model, version, variant, KPI): count, sum and sum of squares of the joined outcomes
kpi_stats = sa.Table(
    "kpi_stats",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("version", sa.String(63), primary_key=True),
    sa.Column("variant", sa.String(16), primary_key=True),
    sa.Column("kpi", sa.String(63), primary_key=True),
    sa.Column("n", sa.Float, nullable=False),
    sa.Column("total", sa.Float, nullable=False),
    sa.Column("total_sq", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

# one outcome per (request, model, KPI): the first wins; version NULL while its prediction
# has not been read (it waits like a label), then the answer it was joined to
kpi_outcomes = sa.Table(
    "kpi_outcomes",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("request_id", sa.String(128), nullable=False),
    sa.Column("model", sa.String(63), nullable=False),
    sa.Column("kpi", sa.String(63), nullable=False),
    sa.Column("value", sa.Float, nullable=False),
    sa.Column("version", sa.String(63), nullable=True),
    sa.Column("variant", sa.String(16), nullable=True),
    sa.Column("label", sa.Text, nullable=True),  # JSON: the request's label, when one came with
    sa.Column("ts", sa.Float, nullable=False),  # received
    sa.UniqueConstraint("request_id", "model", "kpi", name="uq_kpi_outcomes_request"),
    sa.Index("ix_kpi_outcomes_version", "version"),
)

# one row per model: its latest experiment (design, state, baselines, last look)
experiments = sa.Table(
    "experiments",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("doc", sa.Text, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
    sa.Column("revision", sa.Integer, nullable=False, server_default="0"),
)

# --- several replicas (log.backend: nats): store.cluster

partition_leases = sa.Table(
    "partition_leases",
    metadata,
    sa.Column("partition", sa.Integer, primary_key=True),
    sa.Column("owner", sa.String(128), nullable=False),  # server.replica_id
    sa.Column("generation", sa.BigInteger, nullable=False),  # +1 at every change of owner
    sa.Column("expires_at", sa.Float, nullable=False),
    sa.Column("updated_at", sa.Float, nullable=False),
)

cluster_replicas = sa.Table(
    "cluster_replicas",
    metadata,
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("url", sa.String(512), nullable=False),
    sa.Column("monitor_pid", sa.Integer, nullable=True),
    sa.Column("last_seen", sa.Float, nullable=False),
)

log_event_ids = sa.Table(  # ids the Monitor counted from a partitioned log
    "log_event_ids",
    metadata,
    sa.Column("event_id", sa.String(64), primary_key=True),
    sa.Column("partition", sa.Integer, nullable=False),
    sa.Column("at", sa.Float, nullable=False),
    sa.Index("ix_log_event_ids_at", "at"),
)

# --- shared artifacts: every registered version's files, so any replica can serve it

model_versions = sa.Table(
    "model_versions",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("version", sa.String(63), primary_key=True),
    sa.Column("digest", sa.String(64), nullable=False),  # the registry's content digest
    sa.Column("parts", sa.Text, nullable=False),  # JSON: {file: {"sha256", "size"}}
    sa.Column("created_at", sa.Float, nullable=False),
    sa.Column("replica", sa.String(128), nullable=False),  # where it was registered
)

model_artifact_chunks = sa.Table(  # each part's bytes, in order, a few MiB a row
    "model_artifact_chunks",
    metadata,
    sa.Column("model", sa.String(63), primary_key=True),
    sa.Column("version", sa.String(63), primary_key=True),
    sa.Column("part", sa.String(32), primary_key=True),
    sa.Column("chunk", sa.Integer, primary_key=True),
    sa.Column("data", sa.LargeBinary, nullable=False),
)
