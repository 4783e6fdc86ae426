"""Everything a Gateway worker holds, built once from Settings and passed down."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import sqlalchemy as sa

from models.registry import Registry
from monitoring.events import EventSink, InMemoryStatsSink
from monitoring.metrics import GatewayMetrics
from monitoring.prediction_log import LogSink, SegmentWriter, render
from service.auth import Authenticator
from service.inference import Predictor
from service.live import LiveDeployments
from service.settings import Settings
from service.shadows import ShadowPool
from store import AuditLog, DeploymentStore, make_engine


@dataclass
class WorkerContext:
    settings: Settings
    engine: sa.Engine
    registry: Registry
    deployments: DeploymentStore
    audit: AuditLog
    live: LiveDeployments
    auth: Authenticator
    sink: EventSink
    metrics: GatewayMetrics | None
    predictor: Predictor
    shadows: ShadowPool | None = None
    log: LogSink | None = None

    def start_shadows(self) -> None:
        """Shadow lanes need the worker's running event loop: call from a startup hook."""
        s = self.settings.shadows
        self.shadows = ShadowPool(queue_size=s.queue_size, timeout=s.timeout_seconds,
                                  breaker_failures=s.breaker_failures,
                                  breaker_reset_seconds=s.breaker_reset_seconds,
                                  sink=self.sink, metrics=self.metrics)
        self.predictor.shadows = self.shadows

    def publish_gauges(self) -> None:
        if self.metrics is None:
            return
        for model, served in self.live.models().items():
            d = served.deployment
            self.metrics.revision.labels(model).set(d.revision)
            if d.canary is not None:
                self.metrics.canary_weight.labels(model, d.canary.version).set(d.canary.weight)


def build_log(settings: Settings, worker: str, metrics: GatewayMetrics | None) -> LogSink:
    """This worker's prediction-log writer. Its stream name carries the pid and start time,
    so a respawned worker never appends to a segment its dead predecessor may have torn."""
    lg = settings.log

    def on_drop(reason: str, n: int) -> None:
        if metrics is not None:
            metrics.log_dropped.labels(reason).inc(n)

    def on_write(n: int) -> None:
        if metrics is not None:
            metrics.log_records.inc(n)

    writer = SegmentWriter(
        settings.log_dir, f"{worker}-{os.getpid()}-{time.time_ns()}", render,
        queue_size=lg.queue_size, fsync_seconds=lg.fsync_seconds,
        segment_max_bytes=lg.segment_max_bytes, segment_max_seconds=lg.segment_max_seconds,
        max_total_bytes=lg.retention_max_bytes, on_drop=on_drop, on_write=on_write)
    return LogSink(writer, dict(lg.sample))


def build_context(settings: Settings, metrics: GatewayMetrics | None = None,
                  worker: str | None = None) -> WorkerContext:
    """``worker`` names this process's log stream; None keeps events in memory only."""
    engine = make_engine(settings.store_url)
    registry = Registry()
    deployments = DeploymentStore(engine)
    live = LiveDeployments(deployments, registry)
    log_sink = build_log(settings, worker, metrics) if worker and settings.log.enabled else None
    sink: EventSink = log_sink if log_sink is not None else InMemoryStatsSink()
    predictor = Predictor(settings, live, sink, None, metrics)
    return WorkerContext(settings=settings, engine=engine, registry=registry,
                         deployments=deployments, audit=AuditLog(engine), live=live,
                         auth=Authenticator(settings.auth), sink=sink, metrics=metrics,
                         predictor=predictor, log=log_sink)
