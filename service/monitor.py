"""The Monitor BentoML service: one worker that runs the loop of ``monitoring.monitor``.

The Gateway declares it with ``bentoml.depends``, so ``bentoml serve`` starts it as its own
process (circus respawns it after a crash; it resumes from its committed checkpoint). The
Gateway never calls it on the request path: the admin API reads what it commits to the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import bentoml

from models.registry import Registry
from monitoring.drift.base import DriftConfig, Reference
from monitoring.drift.tracker import DriftTracker, reference_from_version
from monitoring.experiments.controller import ExperimentController
from monitoring.log.frames import LogKeyError
from monitoring.log.reader import EventLog, LocalEventLog
from monitoring.log.sink import LogSink
from monitoring.metrics import GatewayMetrics, MonitorMetrics
from monitoring.monitor import Monitor as MonitorLoop
from monitoring.monitor import StepResult
from monitoring.quality.outcomes import KpiJoin
from monitoring.retrain.policy import Policy
from monitoring.retrain.triggers import Triggers
from monitoring.retrain.webhooks import Dispatcher, Outcome, Target, targets_from_config
from monitoring.rollout.controller import Controller
from monitoring.shadows.lanes import ShadowPool
from monitoring.shadows.mirror import ShadowMirror
from service.artifacts import build_registry, fetch_failures
from service.cluster import ClusterMember
from service.context import build_log
from service.drain import delay_sigterm, exit_with_parent
from service.process import collections_paused, lower_priority, tune_gc
from service.settings import Settings
from service.settings import settings as read_settings
from service.settings_monitoring import PolicySettings
from store import DeploymentStore, Engine, PredictionIndex, make_engine
from store.kpis import KpiStore

log = logging.getLogger("vigil.monitor")


def build_monitor(settings: Settings, engine: Engine, registry: Registry,
                  metrics: MonitorMetrics | None = None, mirror: ShadowMirror | None = None,
                  drift: DriftTracker | None = None,
                  event_log: EventLog | None = None) -> MonitorLoop:
    """The loop over this process's engine, with the drift tracker ``build_drift`` made;
    ``event_log`` is the NATS log (else the local segments)."""

    def class_labels_of(model: str, version: str) -> list[str] | None:
        card = registry.get(model, version).card
        return list(card.class_labels) if card.is_classifier and card.class_labels else None

    def on_step(result: StepResult) -> None:
        if metrics is not None:
            metrics.observe_step(result)

    m, lg = settings.monitor, settings.log

    def on_bad_frame(segment: Path, offset: int) -> None:
        if metrics is not None:
            metrics.bad_frames.inc()

    return MonitorLoop(
        engine, event_log or LocalEventLog(settings.log_dir,
                                           keys=settings.log.encryption.keys(),
                                           on_bad_frame=on_bad_frame),
        class_labels_of=class_labels_of, batch_events=m.batch_events, window=m.quality_window,
        index_retention_seconds=m.index_retention_days * 86400,
        pending_label_seconds=m.pending_label_seconds,
        log_retention_seconds=lg.retention_hours * 3600, log_max_bytes=lg.retention_max_bytes,
        on_step=on_step, drift=drift, triggers=build_triggers(settings, engine, registry),
        mirror=mirror, replica=settings.server.replica_id if lg.backend == "nats" else None,
        kpis=KpiJoin(KpiStore(engine), PredictionIndex(engine), m.pending_label_seconds))


def build_drift(settings: Settings, engine: Engine, registry: Registry) -> DriftTracker | None:
    """The drift tracker, or None when drift is off."""
    dr = settings.drift
    if not dr.enabled:
        return None

    def reference_of(model: str, version: str) -> Reference | None:
        return reference_from_version(registry.get(model, version))

    return DriftTracker(
        engine, reference_of,
        DriftConfig(false_alarms_per_100k=dr.false_alarms_per_100k, window=dr.window,
                    keep=dr.rebaseline_rows, error_warmup=dr.error_warmup,
                    error_delay=dr.error_delay, detectors=dr.detectors.model_dump(),
                    river_stride=dr.river_stride),
        sample=dr.sample, rebaseline_rows=dr.rebaseline_rows)


def build_triggers(settings: Settings, engine: Engine, registry: Registry) -> Triggers | None:
    """The retraining policies' runner, or None when no model has a policy."""
    if not settings.policies:
        return None
    deployments = DeploymentStore(engine)

    def champion_of(model: str) -> tuple[str, float, dict[str, Any]]:
        version = deployments.get(model).champion
        mv = registry.get(model, version)
        created = datetime.fromisoformat(str(mv.created_at).replace("Z", "+00:00"))
        return version, created.timestamp(), mv.card.lineage

    return Triggers(engine, {m: policy_from_settings(m, p) for m, p in settings.policies.items()},
                    targets_of(settings), champion_of, settings.server.base_url)


def policy_from_settings(model: str, p: PolicySettings) -> Policy:
    return Policy(model=model, drift_signals=tuple(p.drift_signals),
                  quality_metric=p.quality.metric if p.quality else None,
                  quality_threshold=p.quality.threshold if p.quality else None,
                  min_labels=p.quality.min_labels if p.quality else 200,
                  schedule_days=p.schedule_days, hold_seconds=p.hold_seconds,
                  cooldown_seconds=p.cooldown_seconds)


def build_mirror(settings: Settings, registry: Registry, metrics: GatewayMetrics | None
                 ) -> tuple[ShadowMirror, LogSink] | None:
    """The shadows' lanes and the log stream their answers go to (this process's own, read
    by the next tick like a worker's). Call in the running event loop (the lanes' watchdogs).
    None when the log is off: without primary records there is nothing to mirror."""
    if not settings.log.enabled:
        return None
    sink = build_log(settings, "monitor", metrics)
    s = settings.shadows
    pool = ShadowPool(queue_size=s.queue_size, timeout=s.timeout_seconds,
                      breaker_failures=s.breaker_failures,
                      breaker_reset_seconds=s.breaker_reset_seconds, sink=sink,
                      metrics=metrics, max_batch_rows=s.max_batch_rows,
                      loop=asyncio.get_running_loop())
    return ShadowMirror(pool, lambda m, v: registry.get(m, v).load(),
                        unwritten=lambda: sink.writer.unwritten), sink


def build_controller(settings: Settings, engine: Engine,
                     metrics: MonitorMetrics | None = None,
                     owns: Callable[[str], bool] | None = None) -> Controller:
    def on_transition(model: str, kind: str, state: Any) -> None:
        if metrics is not None:
            metrics.rollout_transitions.labels(model, kind).inc()
            metrics.rollout_step.labels(model).set(
                state.step + 1 if state.status == "running" else 0)

    if metrics is not None:  # every model's series exist from the start, at 0
        for d in DeploymentStore(engine).all():
            metrics.rollout_step.labels(d.model).set(0)
            metrics.observe_experiment(d.model, False, {d.champion: 0.0})
            for kind in ("weight", "promote", "abort", "pause"):
                metrics.rollout_transitions.labels(d.model, kind)
    return Controller(engine, targets_of(settings), settings.server.base_url, on_transition,
                      owns)


def targets_of(settings: Settings) -> list[Target]:
    w = settings.webhooks
    return targets_from_config(w.targets, w.allow_link_local)


def build_dispatcher(settings: Settings, engine: Engine,
                     metrics: MonitorMetrics | None = None) -> Dispatcher:
    w = settings.webhooks

    def on_outcome(outcome: Outcome) -> None:
        if metrics is not None:
            metrics.webhook_deliveries.labels(outcome.target, outcome.status).inc()

    targets = targets_of(settings)
    if metrics is not None:
        for t in targets:  # every series exists from the start, at 0
            for outcome in ("delivered", "retry", "dead", "disabled"):
                metrics.webhook_deliveries.labels(t.name, outcome)
    return Dispatcher(engine, targets, schedule=tuple(w.schedule_seconds),
                      timeout=w.timeout_seconds, jitter=w.jitter,
                      allow_link_local=w.allow_link_local, on_outcome=on_outcome,
                      claim=settings.log.backend == "nats")  # a dispatcher per replica


@bentoml.service(
    name="vigil-monitor",
    workers=1,
    logging={"access": {"enabled": False}},
    metrics={"enabled": False},
)
class Monitor:
    def __init__(self) -> None:
        # the composition root of the Monitor process: its settings, read once, its one
        # engine (lazy: nothing connects before the first statement) and its registry
        self.settings = read_settings()
        self.engine = make_engine(self.settings.store_url,
                                  self.settings.store.busy_timeout_seconds)
        self.registry = build_registry(self.settings, self.engine)
        self.loop: MonitorLoop | None = None
        self.drift: DriftTracker | None = None
        self.controller: Controller | None = None
        self.mirror: ShadowMirror | None = None
        self.shadow_log: LogSink | None = None
        self.member: ClusterMember | None = None  # log.backend: nats
        self._task: asyncio.Task[None] | None = None

    @bentoml.on_startup
    async def start(self) -> None:
        if self.settings.monitor.nice:  # the request path comes first on shared cores
            lower_priority(self.settings.monitor.nice)
        if self.settings.server.gc_tuning:
            tune_gc()
        self.metrics = MonitorMetrics()
        # the shadows' series and the log's, as the Gateway workers name them
        self.gateway_metrics = GatewayMetrics(
            latency_objective_seconds=self.settings.server.latency_objective_seconds)
        self.registry.on_fetch_failure = fetch_failures(self.gateway_metrics)
        built = build_mirror(self.settings, self.registry, self.gateway_metrics)
        self.mirror, self.shadow_log = built if built is not None else (None, None)
        self._stopping = asyncio.Event()
        self._task = asyncio.get_running_loop().create_task(self._run())
        self._dispatch = asyncio.get_running_loop().create_task(self._deliver())
        # outlive the Gateway workers' drain, so the last tick reads their last records
        if self.settings.server.drain_seconds > 0:
            delay_sigterm(self.settings.server.drain_seconds + 1.0, lambda: None)
        self._orphan = asyncio.get_running_loop().create_task(exit_with_parent())

    async def _deliver(self) -> None:
        """The webhook dispatcher: its own loop, so a slow target never delays a tick."""
        interval = self.settings.webhooks.dispatch_seconds
        dispatcher = None
        while True:
            try:
                if dispatcher is None:
                    dispatcher = build_dispatcher(self.settings, self.engine, self.metrics)
                if dispatcher.targets:
                    await asyncio.to_thread(dispatcher.run_due)
                    by = await asyncio.to_thread(dispatcher.outbox.counts)
                    for name in dispatcher.targets:
                        self.metrics.webhook_pending.labels(name).set(
                            by.get((name, "pending"), 0))
                        self.metrics.webhook_dead.labels(name).set(by.get((name, "dead"), 0))
            except Exception:
                log.exception("webhook dispatch failed; retrying")
            await asyncio.sleep(interval)

    async def _run(self) -> None:
        metrics = self.metrics
        interval = self.settings.monitor.tick_seconds
        while self.loop is None:  # the store may still be migrating on first start
            if self._stopping.is_set():
                return
            try:
                drift = build_drift(self.settings, self.engine, self.registry)
                if self.settings.log.backend == "nats" and self.member is None:
                    self.member = ClusterMember(self.settings, self.engine, metrics)
                loop = build_monitor(self.settings, self.engine, self.registry, metrics,
                                     self.mirror, drift,
                                     self.member.log if self.member else None)
                await asyncio.to_thread(loop.load)
                self.controller = build_controller(
                    self.settings, self.engine, metrics,
                    self.member.owner.owns if self.member else None)
                self.experiments = ExperimentController(
                    self.engine, targets_of(self.settings), self.settings.server.base_url,
                    on_look=lambda model, doc: metrics.observe_experiment(
                        model, doc["status"] == "running", doc.get("shares", {})),
                    owns=self.member.owner.owns if self.member else None)
                self.loop, self.drift = loop, drift
            except Exception:
                log.exception("Monitor could not load its state; retrying")
                await asyncio.sleep(interval)
        log.info("Monitor started at %d checkpointed streams", len(self.loop.checkpoint))
        key_error = ""
        while not self._stopping.is_set():
            started = time.monotonic()
            try:
                await asyncio.to_thread(self._tick)
                if self.controller is not None:
                    await asyncio.to_thread(self.controller.tick, self.loop.stats)
                    await asyncio.to_thread(self.experiments.tick, self.loop.stats)
                metrics.observe_status(self.loop.status)
                metrics.observe_kpis(await asyncio.to_thread(KpiStore(self.engine).sums))
                self._publish_shadows()
                metrics.observe_quality(self.loop.stats)
                if self.drift is not None:
                    active = await asyncio.to_thread(self.drift.active_signals)
                    metrics.observe_drift(self.drift.versions, active)
            except LogKeyError as exc:  # a record sealed by a key not configured: stop here
                metrics.tick_failures.inc()
                if str(exc) != key_error:
                    key_error = str(exc)
                    log.error("the prediction log cannot be read: %s; the Monitor reads "
                              "nothing more until the key is configured", exc)
            except Exception:
                metrics.tick_failures.inc()
                log.exception("Monitor tick failed; the batch will be read again")
                await asyncio.to_thread(self._reload)
            try:
                await asyncio.wait_for(self._stopping.wait(),
                                       max(0.0, interval - (time.monotonic() - started)))
            except TimeoutError:
                pass
        try:  # the last tick: whatever the workers flushed while stopping, checkpointed
            await asyncio.to_thread(self._tick)
            log.info("Monitor stopped at lag %d events", self.loop.status.lag_events)
        except Exception:
            log.exception("the Monitor's last tick failed; its records are read on restart")
        await self._close_shadows()
        if self.member is not None:
            await asyncio.to_thread(self.member.stop)

    def _tick(self) -> None:
        """One tick of the loop; with the GC tuning on, collections wait for its end."""
        assert self.loop is not None
        loop, member = self.loop, self.member
        tick = loop.tick if member is None else lambda: member.tick(loop)
        if self.settings.server.gc_tuning:
            collections_paused(tick)
        else:
            tick()

    def _publish_shadows(self) -> None:
        if self.mirror is None:
            return
        for (model, version), state in self.mirror.pool.breaker_states().items():
            self.gateway_metrics.shadow_breaker_open.labels(model, version).set(
                int(state != "closed"))
        if self.shadow_log is not None:
            self.gateway_metrics.log_queue.set(self.shadow_log.writer.queue_depth)

    async def _close_shadows(self) -> None:
        """Let the lanes answer what the last tick queued (at most their timeout), then close
        the shadows' log stream: its records are read by the next Monitor."""
        if self.mirror is None:
            return
        deadline = time.monotonic() + self.settings.shadows.timeout_seconds
        while self.mirror.pool.pending() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        self.mirror.pool.close()
        if self.shadow_log is not None:
            await asyncio.to_thread(self.shadow_log.close)

    def _reload(self) -> None:
        """After a failed commit, memory may hold half a batch: go back to the store's state."""
        assert self.loop is not None
        try:
            self.loop.load()
        except Exception:
            log.exception("Monitor could not reload its state")

    @bentoml.on_shutdown
    async def stop(self) -> None:
        """Finish the tick in progress and run one more (never cancel a commit midway)."""
        if self._task is not None:
            self._stopping.set()
            try:
                await asyncio.wait_for(self._task, 30)
            except (TimeoutError, asyncio.CancelledError):
                log.warning("the Monitor's last tick did not finish in 30 s")
        if getattr(self, "_dispatch", None) is not None:
            self._dispatch.cancel()

    @bentoml.api
    async def status(self) -> dict[str, Any]:
        """The Monitor's lag and throughput (also committed to the store every tick)."""
        return self.loop.status.to_dict() if self.loop else {"starting": True}
