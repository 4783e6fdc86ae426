"""Prometheus metrics of a Gateway worker, created inside the worker (never at import time:
a metric created in the parent before fork may never reach ``/metrics`` under BentoML's
multiprocess mode) and exposed from every process through the multiprocess collector."""

from __future__ import annotations

import os
import re
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
INFERENCE_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1,
                     0.25, 1.0)
DROP_REASONS = ("queue_full", "io_error", "log_full", "render_error")
ERROR_STATUSES = ("401", "403", "404", "413", "415", "422", "429", "431", "500", "503")


class GatewayMetrics:
    """The series a Gateway worker writes. Labels are bounded: model, version, variant,
    outcome — never a request id or a routing key."""

    def __init__(self, registry: CollectorRegistry | None = None,
                 latency_objective_seconds: float = 0.1) -> None:
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {}
        buckets = tuple(sorted({*LATENCY_BUCKETS, latency_objective_seconds}))
        self.requests = Counter(
            "vigil_requests_total", "Prediction requests answered, by outcome.",
            ["model", "version", "variant", "outcome"], **kw)
        self.rows = Counter(
            "vigil_prediction_rows_total", "Rows predicted.",
            ["model", "version", "variant"], **kw)
        self.latency = Histogram(
            "vigil_request_duration_seconds", "Time to answer a prediction request.",
            ["model", "variant"], buckets=buckets, **kw)
        self.inference = Histogram(
            "vigil_inference_duration_seconds", "Time in the ONNX session for one request.",
            ["model", "version"], buckets=INFERENCE_BUCKETS, **kw)
        self.request_errors = Counter(
            "vigil_request_errors_total", "Inference and feedback requests refused or failed, "
            "by HTTP status (no model label: an unknown model name is unbounded).",
            ["status"], **kw)
        for status in ERROR_STATUSES:
            self.request_errors.labels(status)
        self.store_errors = Counter(
            "vigil_store_errors_total", "Store operations that failed in a Gateway worker "
            "(locked past store.busy_timeout_seconds or unreachable): api = an admin or "
            "protocol call answered 503, deployment_refresh = a poll that kept the last "
            "deployment.", ["operation"], **kw)
        for operation in ("api", "deployment_refresh"):
            self.store_errors.labels(operation)
        self.shadow_breaker_open = Gauge(
            "vigil_shadow_breaker_open", "1 while a shadow's circuit breaker is open or "
            "half-open (shadows run in the Monitor).", ["model", "version"],
            multiprocess_mode="livemax", **kw)
        self.log_queue = Gauge(
            "vigil_prediction_log_queue_depth", "Records waiting for the prediction-log "
            "writers, over every worker and the Monitor's shadow answers.",
            multiprocess_mode="livesum", **kw)
        self.build_info = Gauge(
            "vigil_build_info", "Versions of Vigil and what it runs on (always 1).",
            ["vigil_version", "python", "bentoml", "onnxruntime"],
            multiprocess_mode="livemax", **kw)
        self.model_info = Gauge(
            "vigil_model_info", "1 for each version a deployment serves, with its role and "
            "lineage; 0 once it no longer does.",
            ["model", "version", "variant", "task", "dataset_sha256", "code_commit"],
            multiprocess_mode="livemax", **kw)
        self.holdout = Gauge(
            "vigil_model_holdout_quality", "The version's holdout metric from its model card.",
            ["model", "version", "metric"], multiprocess_mode="livemax", **kw)
        self.shadow_requests = Counter(
            "vigil_shadow_requests_total", "Shadow predictions, by outcome "
            "(ok, error, timeout, dropped, breaker_open).",
            ["model", "version", "outcome"], **kw)
        self.shadow_agreement = Counter(
            "vigil_shadow_agreeing_rows_total", "Shadow rows whose prediction agrees with the "
            "answer returned.", ["model", "version"], **kw)
        self.shadow_rows = Counter(
            "vigil_shadow_rows_total", "Shadow rows compared with the answer returned.",
            ["model", "version"], **kw)
        self.revision = Gauge(
            "vigil_deployment_revision", "Deployment revision this worker serves.",
            ["model"], multiprocess_mode="livemax", **kw)
        self.log_records = Counter(
            "vigil_prediction_log_records_total", "Records appended to the prediction log.",
            **kw)
        self.log_dropped = Counter(
            "vigil_prediction_log_dropped_total", "Records not written to the prediction log, by "
            "reason (queue_full, io_error, log_full, render_error).", ["reason"], **kw)
        for reason in DROP_REASONS:
            self.log_dropped.labels(reason)
        self.log_spilled = Counter(  # log.backend: nats
            "vigil_prediction_log_spilled_total", "Records written to the local spill because "
            "NATS did not acknowledge them.", **kw)
        self.log_forwarded = Counter(
            "vigil_prediction_log_forwarded_total", "Spilled records forwarded to NATS.", **kw)
        self.feedback_items = Counter(
            "vigil_feedback_items_total", "Feedback items received, by outcome "
            "(accepted, rejected, unavailable).", ["model", "outcome"], **kw)
        self.canary_weight = Gauge(
            "vigil_canary_weight_ratio", "Share of traffic routed to the canary.",
            ["model", "version"], multiprocess_mode="livemax", **kw)
        self.artifact_fetch_failures = Counter(
            "vigil_artifact_fetch_failures_total", "Pulls of a version from the shared store "
            "that failed (no shared copy, a SHA-256 mismatch, the store unreachable); the "
            "worker keeps its deployment and tries again.", ["model", "version"], **kw)
        self.deployment_behind = Gauge(
            "vigil_deployment_behind", "1 while a worker of this replica serves another "
            "revision of the model's deployment than the stored one (or none): a pull or a "
            "load failed; readiness says why.", ["model"], multiprocess_mode="livemax", **kw)


class MonitorMetrics:
    """The series the Monitor process writes (one process: gauges keep its latest value)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw: dict[str, Any] = {"registry": registry} if registry is not None else {}
        self.events = Counter(
            "vigil_monitor_events_total", "Log records the Monitor consumed, by type "
            "(prediction, feedback, invalid).", ["type"], **kw)
        self.labels = Counter(
            "vigil_monitor_labels_total", "Labels the Monitor processed, by outcome "
            "(joined, duplicate, unmatched, pending).", ["outcome"], **kw)
        self.lag_events = Gauge(
            "vigil_monitor_lag_events", "Complete log records not yet consumed by the Monitor.",
            multiprocess_mode="livemax", **kw)
        self.lag_seconds = Gauge(
            "vigil_monitor_lag_seconds", "Age of the oldest record not yet consumed.",
            multiprocess_mode="livemax", **kw)
        self.last_tick = Gauge(
            "vigil_monitor_last_tick_timestamp_seconds", "When the Monitor last finished a "
            "tick (Unix time).", multiprocess_mode="livemax", **kw)
        self.tick_failures = Counter(
            "vigil_monitor_tick_failures_total", "Monitor ticks that failed and were retried.",
            **kw)
        self.partition_owned = Gauge(  # log.backend: nats
            "vigil_partition_owned", "1 while this replica's Monitor holds the partition's "
            "lease.", ["partition"], multiprocess_mode="livemax", **kw)
        self.partition_lag = Gauge(
            "vigil_monitor_partition_lag_events", "Records of a held partition not yet "
            "consumed.", ["partition"], multiprocess_mode="livemax", **kw)
        self.partition_lag_seconds = Gauge(
            "vigil_monitor_partition_lag_seconds", "Age of the oldest record of a held "
            "partition not yet consumed (0 when caught up).", ["partition"],
            multiprocess_mode="livemax", **kw)
        self.fenced_commits = Counter(
            "vigil_monitor_fenced_commits_total", "Monitor commits refused because the "
            "partition's lease had moved to another owner (the Monitor stepped down).", **kw)
        self.loop_stalls = Counter(
            "vigil_monitor_loop_stalls_total", "Times the Monitor's loop went longer than "
            "log.nats.max_tick_seconds without completing a tick, so its heartbeat stopped "
            "renewing its partitions' leases (they go to another replica).", **kw)
        self.quality = Gauge(
            "vigil_model_quality", "Live quality from joined labels, per version and variant "
            "(window: cumulative or the last N labels).",
            ["model", "version", "variant", "metric", "window"], multiprocess_mode="livemax",
            **kw)
        self.quality_labels = Gauge(
            "vigil_model_quality_labels", "Labels the live quality rests on.",
            ["model", "version", "variant", "window"], multiprocess_mode="livemax", **kw)
        self.drift_active = Gauge(
            "vigil_drift_alarm_active", "1 while a drift alarm of the signal is open "
            "(unacknowledged).", ["model", "version", "signal"], multiprocess_mode="livemax",
            **kw)
        self.torn_tails = Gauge(
            "vigil_prediction_log_torn_segments", "Segments of dead writers ending in a torn "
            "(partial, never read) last line.", multiprocess_mode="livemax", **kw)
        self.bad_frames = Counter(
            "vigil_prediction_log_bad_frames_total", "Encrypted log frames that failed "
            "authentication (or named an unknown key) and were skipped unread.", **kw)

        self.kpi = Gauge(
            "vigil_model_kpi", "Business KPI outcomes joined to the answers of a version and "
            "variant (stat: count, sum, sum_squares, mean).",
            ["model", "version", "variant", "kpi", "stat"], multiprocess_mode="livemax", **kw)
        self.experiment_running = Gauge(
            "vigil_experiment_running", "1 while an experiment runs on the model.", ["model"],
            multiprocess_mode="livemax", **kw)
        self.experiment_share = Gauge(
            "vigil_experiment_arm_share", "A running experiment's traffic share per arm.",
            ["model", "version"], multiprocess_mode="livemax", **kw)
        self.rollout_transitions = Counter(
            "vigil_rollout_transitions_total", "Rollout decisions applied, by kind (weight, "
            "promote, abort, pause).", ["model", "kind"], **kw)
        self.rollout_step = Gauge(
            "vigil_rollout_step", "The running rollout's step (1-based); 0 when none runs.",
            ["model"], multiprocess_mode="livemax", **kw)
        self.webhook_deliveries = Counter(
            "vigil_webhook_deliveries_total", "Webhook delivery attempts, by target and outcome "
            "(delivered, retry, dead, disabled).", ["target", "outcome"], **kw)
        self.webhook_pending = Gauge(
            "vigil_webhook_pending", "Webhook deliveries waiting for their next attempt.",
            ["target"], multiprocess_mode="livemax", **kw)
        self.webhook_dead = Gauge(
            "vigil_webhook_dead_letters", "Webhook deliveries that used every attempt "
            "(redeliver them from the admin API).", ["target"], multiprocess_mode="livemax",
            **kw)
        self.drift_alarms = Counter(
            "vigil_drift_alarms_total", "Drift alarms raised, by signal.",
            ["model", "version", "signal"], **kw)
        self.drift_ratio = Gauge(
            "vigil_drift_statistic_ratio", "The most alarmed detector of a signal: its "
            "statistic over its threshold (an alarm at 1).", ["model", "version", "signal"],
            multiprocess_mode="livemax", **kw)
        self.drift_psi = Gauge(
            "vigil_drift_score", "Population stability index of a feature's live window "
            "against the reference.", ["model", "version", "feature"],
            multiprocess_mode="livemax", **kw)

    def observe_kpis(self, sums: dict[tuple[str, str, str, str], Any]) -> None:
        """Per (model, version, variant, KPI) sums (``store.kpis.KpiSums``) as gauges."""
        for (model, version, variant, kpi), s in sums.items():
            mean = s.total / s.n if s.n else 0.0
            for stat, value in (("count", s.n), ("sum", s.total), ("sum_squares", s.total_sq),
                                ("mean", mean)):
                self.kpi.labels(model, version, variant, kpi, stat).set(value)

    def observe_experiment(self, model: str, running: bool, shares: dict[str, float]) -> None:
        self.experiment_running.labels(model).set(int(running))
        for arm, share in shares.items():
            self.experiment_share.labels(model, arm).set(share if running else 0.0)

    def observe_drift(self, versions: dict[Any, Any],
                      active: set[tuple[str, str, str]] | None = None) -> None:
        for (model, version), det in versions.items():
            if det is None:
                continue
            for signal, st in det.state().items():
                self.drift_ratio.labels(model, version, signal).set(st["max_ratio"])
                self.drift_active.labels(model, version, signal).set(
                    1 if active and (model, version, signal) in active else 0)
            for feature, value in det.feature_psi().items():
                self.drift_psi.labels(model, version, feature).set(value)

    def observe_step(self, result: Any) -> None:
        self.events.labels("prediction").inc(result.predictions)
        self.events.labels("feedback").inc(result.feedback)
        self.events.labels("invalid").inc(result.invalid)
        for outcome, n in result.labels.items():
            self.labels.labels(outcome).inc(n)
        for alarm in result.alarms:
            self.drift_alarms.labels(alarm.model, alarm.version, alarm.signal).inc()

    def observe_quality(self, stats: dict[Any, Any]) -> None:
        """Per (model, version, variant) VersionStats: their live quality as gauges."""
        for (model, version, variant), st in stats.items():
            q = st.quality
            for window, values in (("cumulative", q.cumulative()), ("window", q.windowed())):
                self.quality_labels.labels(model, version, variant, window).set(
                    values.get("labels", 0))
                for metric, value in values.items():
                    if metric in ("labels", "size") or value is None:
                        continue
                    self.quality.labels(model, version, variant, metric, window).set(value)

    def observe_status(self, status: Any) -> None:
        self.last_tick.set(status.updated_at)
        self.lag_events.set(status.lag_events)
        self.lag_seconds.set(status.lag_seconds)
        self.torn_tails.set(status.torn_tails)


LIVE_GAUGE = re.compile(r"^gauge_live\w+_(\d+)\.db$")


def forget_dead_processes(directory: str) -> list[int]:
    """Drop the live-mode gauge files of processes that no longer exist (a killed worker runs
    no exit hook), so their last values do not linger in ``/metrics``. Counters are kept: a
    dead worker's counts still happened."""
    dead = []
    for name in os.listdir(directory):
        m = LIVE_GAUGE.match(name)
        if not m:
            continue
        pid = int(m[1])
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            dead.append(pid)
        except PermissionError:
            pass
    for pid in set(dead):
        multiprocess.mark_process_dead(pid, directory)
    return sorted(set(dead))


def exposition() -> bytes:
    """The text exposition of every process' metrics (multiprocess mode when it is on)."""
    registry = CollectorRegistry()
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if directory:
        forget_dead_processes(directory)
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)
