"""Rollout simulations, seeded: the demo models answer real traffic through the real routing,
the real prediction log and the real Monitor; the controller decides on what the Monitor
measured. Each test asserts the decision and the step it happened at."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from sklearn.datasets import load_breast_cancer

from control.deployments import Actor
from models.deployment import Deployment
from models.errors import StateConflict
from models.registry import Registry
from monitoring.log.events import PredictionEvent
from monitoring.log.reader import LocalEventLog
from monitoring.log.sink import LogSink, render
from monitoring.log.writer import SegmentWriter
from monitoring.monitor import Monitor
from monitoring.rollout.analysis import (
    FAIL,
    PASS,
    Spec,
    State,
    Window,
    analyse,
    error_gate,
    latency_gate,
    quality_gate,
)
from monitoring.rollout.controller import Controller, operate, read, start
from service.routing import route
from store import AuditLog, DeploymentStore

OPS = Actor("ops", "operator")

DATA = load_breast_cancer()
LABELS = ["malignant", "benign"]
SPEC = dict(min_seconds=10, min_requests=150, min_labels=100, max_wait_seconds=30,
            steps=[0.05, 0.25, 0.5, 1.0])


class Sim:
    def __init__(self, engine: sa.Engine, registry: Registry, log_dir: Path, seed: int,
                 canary: str = "v2") -> None:
        self.engine = engine
        self.rng = np.random.default_rng(seed)
        self.store = DeploymentStore(engine)
        self.store.create(Deployment(model="breast_cancer", champion="v1",
                                     salt=f"sim-{seed}"))  # routing seeded too
        self.runtimes = {v: registry.get("breast_cancer", v).load() for v in ("v1", canary)}
        self.features = self.runtimes["v1"].card.features
        self.seed, self.streams = seed, 0
        self.writer = SegmentWriter(log_dir, f"gw1-0-{seed}", render, queue_size=1 << 20)
        self.sink = LogSink(self.writer)
        self.monitor = Monitor(engine, LocalEventLog(log_dir),
                               class_labels_of=lambda m, v: LABELS, clock=lambda: self.now)
        self.monitor.load()
        self.controller = Controller(engine, [])
        self.now = 1_800_000_000.0
        self.canary = canary

    def second(self, n: int, *, errors: float = 0.0, slow: float = 1.0,
               skew: float = 0.0, shuffle: bool = False, labels: bool = True) -> None:
        """One simulated second of traffic: n keyed requests, their answers and labels."""
        deployment = self.store.get("breast_cancer")
        idx = self.rng.integers(0, len(DATA.target), n)
        keys = [uuid.UUID(int=int(self.rng.integers(1 << 62))).hex for _ in range(n)]
        routes = [route(deployment, k) for k in keys]
        for version in {r.version for r in routes}:
            rows = [i for i, r in enumerate(routes) if r.version == version]
            outputs = self.runtimes[version].predict(DATA.data[idx[rows]])
            canary = version == self.canary and routes[rows[0]].variant == "canary"
            if canary and skew:
                for o in outputs:
                    if o["label"] == "benign" and self.rng.random() < skew:
                        o.update(label="malignant", label_index=0,
                                 probabilities={"malignant": 0.9, "benign": 0.1})
            if canary and shuffle:  # the same class mix, assigned to the wrong rows
                outputs = [outputs[j] for j in self.rng.permutation(len(outputs))]
            for j, i in enumerate(rows):
                failed = canary and self.rng.random() < errors
                base = 0.003 * (slow if canary else 1.0)
                self.sink.emit(PredictionEvent(
                    request_id=keys[i], model="breast_cancer", version=version,
                    variant=routes[i].variant, time=self.now, rows=1,
                    latency_seconds=float(base * self.rng.uniform(0.8, 1.2)),
                    status="error" if failed else "ok",
                    inputs=DATA.data[idx[i]:idx[i] + 1], features=self.features,
                    outputs=None if failed else [outputs[j]]))
        if labels:
            self.sink.feedback("breast_cancer", [
                {"request_id": k, "label": LABELS[DATA.target[i]], "row": 0}
                for k, i in zip(keys, idx, strict=True)], self.now)
        self.writer.close()  # every record of this second is on disk for the Monitor
        self.streams += 1
        self.writer = SegmentWriter(self.writer.directory, f"gw1-{self.streams}-{self.seed}",
                                    render, queue_size=1 << 20)
        self.sink = LogSink(self.writer)
        self.monitor.tick()
        self.controller.tick(self.monitor.stats, self.now)
        self.now += 1

    def state(self) -> State:
        return State.from_dict(read(self.engine, "breast_cancer")["state"])

    def run(self, seconds: int, n: int = 300, **kw: Any) -> State:
        for _ in range(seconds):
            self.second(n, **kw)
            if self.state().status != "running":
                break
        return self.state()


@pytest.fixture
def sim(engine: sa.Engine, registry: Registry, tmp_path: Path) -> Sim:
    s = Sim(engine, registry, tmp_path / "log", seed=11)
    start(engine, "breast_cancer", Spec.from_dict({"candidate": "v2", **SPEC}),
          Actor("tester", "operator"), now=s.now)
    return s


def decisions(state: State) -> list[tuple[int, str]]:
    return [(h["step"], h["decision"]) for h in state.history]


def test_a_canary_as_good_as_the_champion_is_promoted_through_every_step(sim: Sim) -> None:
    state = sim.run(200)
    assert state.status == "promoted", state.reason
    # 5% → 25% → 50%, then the last step (100%) is the promotion
    assert decisions(state) == [(0, "advanced"), (1, "advanced"), (2, "advanced")]
    d = sim.store.get("breast_cancer")
    assert d.champion == "v2" and d.canary is None and d.history[-1] == "v1"
    actions = [r.action for r in AuditLog(sim.engine).recent(20) if r.actor == "system:rollout"]
    assert actions.count("rollout.weight") == 2 and "rollout.promote" in actions


@pytest.mark.parametrize(("traffic", "gate"), [
    ({"errors": 0.08}, "error_rate"),
    ({"slow": 5.0}, "latency_p95"),  # 15 ms against 3 ms
    ({"skew": 0.5, "labels": False}, "prediction_divergence"),  # before any label arrives
    ({"shuffle": True}, "quality"),
])
def test_a_worse_canary_is_aborted_at_the_first_step(sim: Sim, traffic: dict[str, Any],
                                                     gate: str) -> None:
    state = sim.run(200, **traffic)
    assert state.status == "aborted", state.reason
    assert decisions(state) == [(0, "aborted")]
    analysis = state.history[-1]["analysis"]
    failed = [g["name"] for g in analysis["gates"] if g["verdict"] == FAIL]
    assert gate in failed, analysis
    d = sim.store.get("breast_cancer")
    assert d.champion == "v1" and d.canary is None  # aborted, not "rolled back"


def test_too_little_traffic_is_held_then_paused_not_promoted(sim: Sim) -> None:
    state = sim.run(200, n=20)  # ~1 canary request a second: 150 never come in time
    assert state.status == "paused" and "not enough evidence" in state.reason
    assert decisions(state) == [(0, "paused")]
    assert sim.store.get("breast_cancer").champion == "v1"
    operate(sim.controller, "breast_cancer", "abort", OPS, now=sim.now)
    assert sim.state().status == "aborted" and sim.store.get("breast_cancer").canary is None


def test_an_operator_change_wins_over_the_controller(sim: Sim) -> None:
    sim.run(3)
    d = sim.store.get("breast_cancer")
    from models.deployment import apply_patch

    sim.store.replace(apply_patch(d, {"canary": None}), d.revision)  # an operator clears it
    state = sim.run(3)
    assert state.status == "paused" and "changed outside" in state.reason
    assert sim.store.get("breast_cancer").canary is None  # the controller did not undo it


def test_a_pause_made_while_the_controller_works_is_not_written_back(sim: Sim) -> None:
    """The controller reads the rollout, an operator pauses it, then the controller writes
    what it decided from its read: the pause must stand (it used to be overwritten)."""
    sim.run(3)
    seen = sim.controller.running()  # the controller's read, before the operator acts
    operate(sim.controller, "breast_cancer", "pause", OPS, now=sim.now)
    sim.controller.running = lambda: seen  # type: ignore[method-assign]
    weights = sim.store.get("breast_cancer").canary
    for _ in range(3):
        sim.controller.tick(sim.monitor.stats, sim.now)
        sim.now += 1
    state = sim.state()
    assert state.status == "paused" and state.reason == "paused by ops"
    assert sim.store.get("breast_cancer").canary == weights
    # and a second pause is a conflict, as the CLI reports it
    with pytest.raises(StateConflict, match="status: the rollout is paused") as err:
        operate(sim.controller, "breast_cancer", "pause", OPS, now=sim.now)
    assert (err.value.field, err.value.reason) == ("status", "the rollout is paused, not running")


def test_an_operator_command_that_loses_the_race_is_decided_again(sim: Sim) -> None:
    """The controller writes between the operator's read and write: the command is re-read
    and re-decided on what the controller wrote, once, with one audit row."""
    sim.run(3)
    controller, real_read = sim.controller, sim.controller.deployments.get
    raced = []

    def get_and_race(model: str) -> Deployment:  # runs between operate's read and write
        if not raced:
            raced.append(True)
            for m, doc, revision in controller.running():
                doc["analysis"] = {"at": sim.now, "note": "the controller was here"}
                controller._save(m, doc, revision, sim.now)  # noqa: SLF001
        return real_read(model)
    controller.deployments.get = get_and_race  # type: ignore[method-assign]
    doc = operate(controller, "breast_cancer", "abort", OPS, now=sim.now)
    assert raced and doc["state"]["status"] == "aborted"
    assert doc["analysis"]["note"] == "the controller was here"  # built on its write
    aborts = [r for r in AuditLog(sim.engine).recent(50) if r.action == "rollout.abort"]
    assert len(aborts) == 1 and aborts[0].actor == "ops"
    assert sim.store.get("breast_cancer").canary is None


def test_gates_use_significance_not_point_estimates() -> None:
    spec = Spec(candidate="v2", min_requests=100, min_labels=50)
    champion = Window(requests=1000, errors=10)
    assert error_gate(spec, Window(requests=100, errors=3), champion).verdict == PASS
    assert error_gate(spec, Window(requests=1000, errors=60), champion).verdict == FAIL
    a, b = Window(labelled=60, score=0.90, score_var=0.09), Window(labelled=60, score=0.95,
                                                                    score_var=0.0475)
    assert quality_gate(spec, a, b).verdict == PASS  # 5 points worse, but 60 labels
    a.labelled = b.labelled = 5000
    assert quality_gate(spec, a, b).verdict == FAIL
    result = analyse(spec, Window(requests=10), Window(requests=10), set(), set(), 999)
    assert result.verdict == "Inconclusive"


def test_the_latency_gate_needs_both_the_ratio_and_the_slack() -> None:
    """Sub-millisecond p95s that triple under CPU contention are noise, not a slower model: the
    gate fails only when the canary is also latency_slack_ms slower (a CI run aborted a
    same-speed rollout on 3x of ~1 ms before the slack existed)."""
    spec = Spec(candidate="v2", min_requests=100, latency_ratio=1.5, latency_slack_ms=5.0)
    champion = Window(requests=1000, p95=0.0008)
    noisy = latency_gate(spec, Window(requests=500, p95=0.0032), champion)  # 4x, +2.4 ms
    assert noisy.verdict == PASS and noisy.value == 4.0 and "+2.40 ms" in noisy.detail
    slow = latency_gate(spec, Window(requests=500, p95=0.0090), champion)  # 11x, +8.2 ms
    assert slow.verdict == FAIL
    assert latency_gate(Spec(candidate="v2", min_requests=100, latency_slack_ms=0), Window(
        requests=500, p95=0.0032), champion).verdict == FAIL  # no slack: the ratio alone
    big = Window(requests=1000, p95=0.200)
    assert latency_gate(spec, Window(requests=500, p95=0.290), big).verdict == PASS  # 1.45x
    assert latency_gate(spec, Window(requests=500, p95=0.310), big).verdict == FAIL  # 1.55x
