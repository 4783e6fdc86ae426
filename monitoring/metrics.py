"""Prometheus metrics of a Gateway worker, created inside the worker (never at import time:
a metric created in the parent before fork may never reach ``/metrics`` under BentoML's
multiprocess mode) and exposed from every process through the multiprocess collector."""

from __future__ import annotations

import os
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


class GatewayMetrics:
    """The series a Gateway worker writes. Labels are bounded: model, version, variant,
    outcome — never a request id or a routing key."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw = {"registry": registry} if registry is not None else {}
        self.requests = Counter(
            "vigil_requests_total", "Prediction requests answered, by outcome.",
            ["model", "version", "variant", "outcome"], **kw)
        self.rows = Counter(
            "vigil_prediction_rows_total", "Rows predicted.",
            ["model", "version", "variant"], **kw)
        self.latency = Histogram(
            "vigil_request_duration_seconds", "Time to answer a prediction request.",
            ["model", "variant"], buckets=LATENCY_BUCKETS, **kw)
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
        self.feedback_items = Counter(
            "vigil_feedback_items_total", "Feedback items received, by outcome "
            "(accepted, rejected, unavailable).", ["model", "outcome"], **kw)
        self.canary_weight = Gauge(
            "vigil_canary_weight_ratio", "Share of traffic routed to the canary.",
            ["model", "version"], multiprocess_mode="livemax", **kw)


class MonitorMetrics:
    """The series the Monitor process writes (one process: gauges keep its latest value)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        kw = {"registry": registry} if registry is not None else {}
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
        self.torn_tails = Gauge(
            "vigil_prediction_log_torn_segments", "Segments of dead writers ending in a torn "
            "(partial, never read) last line.", multiprocess_mode="livemax", **kw)

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

    def observe_drift(self, versions: dict[Any, Any]) -> None:
        for (model, version), det in versions.items():
            if det is None:
                continue
            for signal, st in det.state().items():
                self.drift_ratio.labels(model, version, signal).set(st["max_ratio"])
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

    def observe_status(self, status: Any) -> None:
        self.lag_events.set(status.lag_events)
        self.lag_seconds.set(status.lag_seconds)
        self.torn_tails.set(status.torn_tails)


def exposition() -> bytes:
    """The text exposition of every process' metrics (multiprocess mode when it is on)."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)
