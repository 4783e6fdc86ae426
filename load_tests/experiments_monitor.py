"""Experiments through the real Monitor and store: requests routed by the stored deployment
(the experiment's arms), logged, read by the Monitor with its KPI join, outcomes back through
feedback records, and the experiment controller looking every tick. Used by
``tests/test_experiments.py`` and by ``load_tests/experiments_sim.py`` (A/A runs)."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from control.deployments import Actor
from models.card import Feature
from models.deployment import Deployment
from monitoring.experiments.controller import ExperimentController, read, start
from monitoring.log.events import PredictionEvent
from monitoring.log.reader import LocalEventLog
from monitoring.log.sink import LogSink, render
from monitoring.log.writer import SegmentWriter
from monitoring.monitor import Monitor
from monitoring.quality.outcomes import KpiJoin
from monitoring.retrain.webhooks import Target
from service.routing import route
from store import DeploymentStore, Engine, PredictionIndex, make_engine, migrate
from store.kpis import KpiStore

FEATURES = (Feature("x", "float"),)
OUTPUT = {"label": "b", "label_index": 1, "probabilities": {"a": 0.3, "b": 0.7}}


class Traffic:
    """Requests routed by the stored deployment, logged, read by the real Monitor; each
    request's conversion comes back through /feedback's records."""

    def __init__(self, engine: Engine, log_dir: Path, seed: int, model: str = "m") -> None:
        self.engine, self.rng, self.i, self.model = engine, np.random.default_rng(seed), 0, model
        self.log_dir, self.streams = log_dir, 0
        self.writer = SegmentWriter(log_dir, "gw1-0-0", render, queue_size=1 << 20)
        self.sink = LogSink(self.writer)
        self.now = 1_700_000_000.0
        self.monitor = Monitor(engine, LocalEventLog(log_dir), class_labels_of=lambda m, v:
                               ["a", "b"], clock=lambda: self.now,
                               kpis=KpiJoin(KpiStore(engine), PredictionIndex(engine)))
        self.monitor.load()
        self.target = Target("hook", "generic", "http://127.0.0.1:9/",
                             events=("vigil.experiment.concluded",))
        self.controller = ExperimentController(engine, [self.target], rng=self.rng)

    def run(self, rates: dict[str, float], errors: dict[str, float], n: int) -> None:
        """``n`` requests, a Monitor tick and a look of the controller."""
        d = DeploymentStore(self.engine).get(self.model)
        for _ in range(n):
            self.i += 1
            r = route(d, f"user-{self.i}")
            assert r is not None
            ok = self.rng.random() >= errors.get(r.version, 0.0)
            self.sink.emit(PredictionEvent(
                request_id=f"r{self.i}", model=self.model, version=r.version,
                variant=r.variant, time=self.now, rows=1, latency_seconds=0.001,
                status="ok" if ok else "error", inputs=np.array([[1.0]]), features=FEATURES,
                outputs=[OUTPUT] if ok else None, error=None if ok else "boom"))
            if ok:
                self.sink.feedback(self.model, [{"request_id": f"r{self.i}", "row": 0, "kpis": {
                    "conversion": float(self.rng.random() < rates[r.version])}}], self.now)
        self.writer.close()  # every record of this second is on disk for the Monitor
        self.streams += 1
        self.writer = SegmentWriter(self.log_dir, f"gw1-{self.streams}-0", render,
                                    queue_size=1 << 20)
        self.sink = LogSink(self.writer)
        self.now += 1
        self.monitor.tick()
        self.controller.tick(self.monitor.stats, self.now)

    def until_concluded(self, rates: dict[str, float], errors: dict[str, float], n: int,
                        ticks: int) -> dict[str, Any]:
        for _ in range(ticks):
            self.run(rates, errors, n)
            doc = read(self.engine, self.model)
            if doc is not None and doc["status"] != "running":
                return doc
        return read(self.engine, self.model) or {}


def aa_through_monitor(runs: int, seed: int, min_effect: float = 0.05, p: float = 0.3,
                       batch: int = 500) -> list[dict[str, Any]]:
    """A/A experiments on a fresh SQLite store each, run to their conclusion (futility at
    the truncation at the latest): their decisions."""
    out = []
    spec = {"arms": {"v1": 0.5, "v2": 0.5}, "primary": "conversion", "min_effect": min_effect,
            "alpha": 0.05, "power": 0.8, "guardrails": [], "mode": "fixed",
            "auto_promote": False}
    for k in range(runs):
        with tempfile.TemporaryDirectory() as tmp:
            engine = make_engine(f"sqlite:///{Path(tmp) / 'vigil.db'}")
            migrate(engine)
            DeploymentStore(engine).create(Deployment(model="m", champion="v1",
                                                      salt=f"aa-{seed}-{k}"))
            t = Traffic(engine, Path(tmp) / "log", seed * 1000 + k)
            doc = start(engine, "m", spec, "binary", "higher", Actor("sim"), t.now)
            ticks = 2 * doc["max_samples_per_arm"] // (batch // 2) + 5
            out.append(t.until_concluded({"v1": p, "v2": p}, {}, batch, ticks))
            t.writer.close()
            engine.dispose()
    return out
