"""Everything a Gateway worker holds, built once from Settings and passed down."""

from __future__ import annotations

import base64
import os
import time
from dataclasses import dataclass, field
from typing import Any

import bentoml
from bentoml.exceptions import BentoMLException

from models.errors import Unavailable
from monitoring.log.events import EventSink, InMemoryStatsSink
from monitoring.log.pii import Redactor
from monitoring.log.sink import LogSink, Renderer
from monitoring.log.writer import SegmentWriter
from monitoring.metrics import GatewayMetrics
from service.artifacts import SharedRegistry, build_registry
from service.auth import Authenticator
from service.cluster import nats_writer
from service.front import FrontDoor
from service.inference import Predictor
from service.live import LiveDeployments
from service.settings import Settings
from store import AuditLog, DeploymentStore, Engine, make_engine


@dataclass
class WorkerContext:
    settings: Settings
    engine: Engine
    registry: SharedRegistry
    deployments: DeploymentStore
    audit: AuditLog
    live: LiveDeployments
    auth: Authenticator
    sink: EventSink
    metrics: GatewayMetrics | None
    predictor: Predictor
    front: FrontDoor
    log: LogSink | None = None
    draining: bool = False  # SIGTERM arrived: readiness answers 503 (service.drain)
    _published: dict[str, set[Any]] = field(default_factory=dict)

    def readiness(self) -> Unavailable | None:
        """Why this worker is not ready, or None: it serves everything the deployments name
        (with no deployment at all, too: the first model must be registrable through a load
        balancer that waits for readiness) and is not draining."""
        if self.draining:
            return Unavailable("draining: this worker is shutting down")
        reasons = self.live.unready()
        if reasons:
            return Unavailable("not ready: " + "; ".join(reasons), retry_after=5)
        return None

    def publish_gauges(self) -> None:
        """Deployment-shaped gauges; called when a revision moves. A label set this worker no
        longer serves is set to 0 (multiprocess gauges cannot be removed)."""
        m = self.metrics
        if m is None:
            return
        info: set[tuple[str, ...]] = set()
        weights: set[tuple[str, str]] = set()
        for model, served in self.live.models().items():
            d = served.deployment
            m.revision.labels(model).set(d.revision)
            roles = [(d.champion, "champion")] + \
                ([(d.canary.version, "canary")] if d.canary is not None else []) + \
                [(s.version, "shadow") for s in d.shadows] + \
                [(a.version, "experiment") for a in d.arms]
            for version, variant in roles:
                card = served.runtimes[version].card
                lineage = card.lineage
                info.add((model, version, variant, card.task,
                          str(lineage.get("dataset_sha256", "")),
                          str(lineage.get("code_commit", ""))))
                for metric, value in (card.raw.get("metrics", {}).get("holdout") or {}).items():
                    if isinstance(value, (int, float)):
                        m.holdout.labels(model, version, metric).set(value)
            if d.canary is not None:
                weights.add((model, d.canary.version))
                m.canary_weight.labels(model, d.canary.version).set(d.canary.weight)
        for labels in self._published.get("info", set()) - info:
            m.model_info.labels(*labels).set(0)
        for labels in info:
            m.model_info.labels(*labels).set(1)
        for labels in self._published.get("weights", set()) - weights:
            m.canary_weight.labels(*labels).set(0)
        self._published = {"info": info, "weights": weights}

    def publish_runtime(self) -> None:
        """Gauges that move all the time: the log's queue depth."""
        m = self.metrics
        if m is None:
            return
        if self.log is not None:
            m.log_queue.set(self.log.writer.queue_depth)
        for model, behind in self.live.behind().items():
            m.deployment_behind.labels(model).set(1 if behind else 0)


def log_redactor(settings: Settings) -> Redactor:
    key = settings.log.hash_key
    return Redactor(base64.b64decode(key.get_secret_value()) if key else None,
                    hash_request_ids=settings.log.hash_routing_keys)


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

    # the Monitor writes shadows' answers to inputs and request ids it read from the log:
    # already dropped and hashed, never to be hashed twice
    redactor = None if worker == "monitor" else log_redactor(settings)
    stream = f"{worker}-{os.getpid()}-{time.time_ns()}"
    if lg.backend == "nats":
        return LogSink(nats_writer(settings, stream, Renderer(redactor=redactor), metrics,
                                   on_drop, on_write),
                       {str(variant): rate for variant, rate in lg.sample.items()})
    writer = SegmentWriter(
        settings.log_dir, stream,
        Renderer(redactor=redactor),
        queue_size=lg.queue_size, fsync_seconds=lg.fsync_seconds,
        segment_max_bytes=lg.segment_max_bytes, segment_max_seconds=lg.segment_max_seconds,
        max_total_bytes=lg.retention_max_bytes, on_drop=on_drop, on_write=on_write,
        keys=settings.log.encryption.keys())
    return LogSink(writer, {str(variant): rate for variant, rate in lg.sample.items()})


def build_context(settings: Settings, metrics: GatewayMetrics | None = None,
                  worker: str | None = None) -> WorkerContext:
    """``worker`` names this process's log stream; None keeps events in memory only."""
    engine = make_engine(settings.store_url, settings.store.busy_timeout_seconds)
    registry = build_registry(settings, engine, metrics)
    deployments = DeploymentStore(engine)
    live = LiveDeployments(deployments, registry,
                           retry_seconds=settings.store.deployment_poll_seconds)
    log_sink = build_log(settings, worker, metrics) if worker and settings.log.enabled else None
    sink: EventSink = log_sink if log_sink is not None else InMemoryStatsSink()
    predictor = Predictor(sink, metrics)
    auth = Authenticator(settings.auth)
    return WorkerContext(settings=settings, engine=engine, registry=registry,
                         deployments=deployments, audit=AuditLog(engine), live=live,
                         auth=auth, sink=sink, metrics=metrics, predictor=predictor,
                         front=FrontDoor(settings, auth, live, predictor, metrics),
                         log=log_sink)


def built_context() -> WorkerContext | None:
    """This worker's context once BentoML has built its ``Gateway()`` (with no arguments,
    after every route was declared at import): the routes ask for it per request rather than
    having it pushed into module-level apps."""
    try:
        service = bentoml.get_current_service()
    except BentoMLException:
        return None
    ctx = getattr(service, "ctx", None)
    return ctx if isinstance(ctx, WorkerContext) else None


def current_context() -> WorkerContext:
    ctx = built_context()
    if ctx is None:
        raise RuntimeError("no Gateway worker is built in this process yet")
    return ctx


def current_metrics() -> GatewayMetrics | None:
    ctx = built_context()
    return ctx.metrics if ctx is not None else None
