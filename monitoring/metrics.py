"""Prometheus metrics of a Gateway worker, created inside the worker (never at import time:
a metric created in the parent before fork may never reach ``/metrics`` under BentoML's
multiprocess mode) and exposed from every process through the multiprocess collector."""

from __future__ import annotations

import os

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
        self.canary_weight = Gauge(
            "vigil_canary_weight_ratio", "Share of traffic routed to the canary.",
            ["model", "version"], multiprocess_mode="livemax", **kw)


def exposition() -> bytes:
    """The text exposition of every process' metrics (multiprocess mode when it is on)."""
    registry = CollectorRegistry()
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry)
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY)
