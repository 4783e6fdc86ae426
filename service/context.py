"""Everything a Gateway worker holds, built once from Settings and passed down."""

from __future__ import annotations

from dataclasses import dataclass

import sqlalchemy as sa

from models.registry import Registry
from monitoring.events import InMemoryStatsSink
from monitoring.metrics import GatewayMetrics
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
    sink: InMemoryStatsSink
    metrics: GatewayMetrics | None
    predictor: Predictor
    shadows: ShadowPool | None = None

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


def build_context(settings: Settings, metrics: GatewayMetrics | None = None) -> WorkerContext:
    engine = make_engine(settings.store_url)
    registry = Registry()
    deployments = DeploymentStore(engine)
    live = LiveDeployments(deployments, registry)
    sink = InMemoryStatsSink()
    predictor = Predictor(settings, live, sink, None, metrics)
    return WorkerContext(settings=settings, engine=engine, registry=registry,
                         deployments=deployments, audit=AuditLog(engine), live=live,
                         auth=Authenticator(settings.auth), sink=sink, metrics=metrics,
                         predictor=predictor)
