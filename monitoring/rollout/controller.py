"""The rollout controller: runs in the Monitor, reads each running rollout from the store,
measures the step's window from the Monitor's stats, lets ``rollout.analysis`` decide, and
applies the decision — deployment change (compare-and-set on its revision), audit row
(``system:rollout``), webhook event and the new rollout state — in one transaction. An
operator's concurrent change wins: the controller's write is a compare-and-set on the
deployment's revision and on the rollout's own, fails when either moved, and it looks again
next tick. An operator's command that loses the race to the controller is re-read and
re-decided on the state the controller left."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np

from control.deployments import (
    Actor,
    CardOf,
    Edit,
    Loader,
    change_deployment,
    commit_change,
    plan_change,
)
from models.deployment import Deployment, apply_patch, promoted
from models.errors import RolloutNotFound, StateConflict
from monitoring.quality.scores import ClassifierQuality
from monitoring.quality.stats import Sketch, VersionStats
from monitoring.retrain.webhooks import Target, enqueue
from monitoring.rollout.analysis import (
    Action,
    Analysis,
    Spec,
    State,
    Window,
    advance,
    analyse,
    decide,
)
from store import (
    AuditLog,
    AuditRecord,
    DeploymentStore,
    DriftStore,
    Engine,
    StaleRevision,
    Transaction,
    transaction,
)
from store.kpis import KpiStore
from store.rollouts import RolloutStore, StaleRollout

log = logging.getLogger("vigil.rollout")
ACTOR = "system:rollout"
SYSTEM = Actor(ACTOR)  # the controller deciding on its own
OPERATOR_ATTEMPTS = 5  # an operator's command re-read after the controller wrote meanwhile


def counters(st: VersionStats | None) -> dict[str, Any]:
    """What a window is measured from: cumulative counts a later snapshot subtracts."""
    if st is None:
        return {"requests": 0, "errors": 0, "latency": Sketch().to_dict(), "dist": {},
                "values": Sketch().to_dict(), "labelled": 0, "good": 0.0, "good_sq": 0.0}
    q = st.quality
    if isinstance(q, ClassifierQuality):
        labelled, good = int(q.confusion.sum()), float(np.trace(q.confusion))
        good_sq = good
    else:
        labelled, good, good_sq = q.n, -q.abs_sum, q.sq_sum
    return {"requests": st.requests, "errors": st.errors, "latency": st.latency.to_dict(),
            "dist": dict(st.label_counts), "values": st.values.to_dict(),
            "labelled": labelled, "good": good, "good_sq": good_sq,
            "classifier": isinstance(q, ClassifierQuality)}


def _sketch_diff(now: dict[str, Any], base: dict[str, Any]) -> Sketch:
    s = Sketch.from_dict(now)
    b = Sketch.from_dict(base)
    for store, other in ((s.pos, b.pos), (s.neg, b.neg)):
        for k, v in other.items():
            store[k] = store.get(k, 0) - v
            if store[k] <= 0:
                store.pop(k)
    s.zero -= b.zero
    s.n -= b.n
    return s


def with_kpi(counts: dict[str, Any], kpis: KpiStore | None, key: tuple[str, str, str],
             kpi: str | None) -> dict[str, Any]:
    """``counts`` with the gated KPI's sums (count, sum, sum of squares) of ``key``."""
    if kpis is None or kpi is None:
        return counts
    s = kpis.sums(key[0]).get((*key, kpi))
    return {**counts, "kpi": [s.n, s.total, s.total_sq] if s else [0.0, 0.0, 0.0]}


def window(now: dict[str, Any], base: dict[str, Any]) -> Window:
    w = Window(requests=now["requests"] - base["requests"],
               errors=now["errors"] - base["errors"])
    if "kpi" in now and "kpi" in base:
        n, s, ss = (a - b for a, b in zip(now["kpi"], base["kpi"], strict=True))
        if n > 0:
            w.kpi_n, w.kpi_mean = n, s / n
            w.kpi_var = max(ss / n - w.kpi_mean ** 2, 0.0)
    latency = _sketch_diff(now["latency"], base["latency"])
    w.p95 = latency.quantile(0.95) if latency.n > 0 else None
    if now.get("classifier", True) and now["dist"]:
        w.distribution = {k: float(v - base["dist"].get(k, 0)) for k, v in now["dist"].items()}
    else:  # a regressor: its values' sketch buckets, coarsened to ~40% wide bins
        values = _sketch_diff(now["values"], base["values"])
        for sign, store in (("+", values.pos), ("-", values.neg)):
            for k, v in store.items():
                key = f"{sign}{k // 20}"
                w.distribution[key] = w.distribution.get(key, 0.0) + v
    n = now["labelled"] - base["labelled"]
    w.labelled = n
    if n > 0:
        good = now["good"] - base["good"]
        if now.get("classifier", True):
            p = good / n
            w.score, w.score_var = p, p * (1 - p)
        else:  # -MAE; variance of the absolute errors from their sum of squares
            mae = -good / n
            w.score = -mae
            w.score_var = max((now["good_sq"] - base["good_sq"]) / n - mae * mae, 0.0)
    return w


def iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


class Controller:
    def __init__(self, engine: Engine, targets: list[Target], base_url: str = "",
                 on_transition: Callable[[str, str, State], None] | None = None,
                 owns: Callable[[str], bool] | None = None) -> None:
        """``owns(model)``: several replicas (log.backend: nats) step a model's rollout only
        at the owner of its partition, the one Monitor whose statistics are current."""
        self.engine = engine
        self.owns = owns
        self.deployments = DeploymentStore(engine)
        self.audit = AuditLog(engine)
        self.rollouts = RolloutStore(engine)
        self.drift = DriftStore(engine)  # the drift gate reads the open alarms
        self.targets = targets
        self.base_url = base_url
        self.on_transition = on_transition

    def running(self) -> list[tuple[str, dict[str, Any], int]]:
        """Every rollout: model, document and the revision a write must find unchanged."""
        return [(r.model, r.doc, r.revision) for r in self.rollouts.all()]

    def tick(self, stats: dict[Any, VersionStats], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for model, doc, revision in self.running():
            if State.from_dict(doc["state"]).status != "running":
                continue
            if self.owns is not None and not self.owns(model):
                continue
            try:
                self._step(model, doc, revision, stats, now)
            except StaleRevision:
                log.info("rollout of %s: the deployment moved under us; next tick", model)
            except StaleRollout:
                log.info("rollout of %s: an operator changed it meanwhile; next tick", model)
            except Exception:
                log.exception("rollout of %s failed this tick", model)

    def _step(self, model: str, doc: dict[str, Any], revision: int,
              stats: dict[Any, VersionStats], now: float) -> None:
        spec, state = Spec.from_dict(doc["spec"]), State.from_dict(doc["state"])
        d = self.deployments.get(model)
        canary_key = (model, spec.candidate, "canary")
        champion_key = (model, d.champion, "champion")
        kpi = (spec.kpi_gate or {}).get("kpi")
        kpis = KpiStore(self.engine) if kpi else None

        def measure(key: tuple[str, str, str]) -> dict[str, Any]:
            return with_kpi(counters(stats.get(key)), kpis, key, kpi)

        if d.canary is None or d.canary.version != spec.candidate:
            state.status, state.reason = "paused", "the canary was changed outside the rollout"
            self._commit(model, doc, revision, spec, state,
                         Action("pause", None, "vigil.rollout.paused"), d, now)
            return
        if "baseline" not in doc:
            doc["baseline"] = {"canary": measure(canary_key),
                               "champion": measure(champion_key)}
            self._save(model, doc, revision, now)
            return
        canary = window(measure(canary_key), doc["baseline"]["canary"])
        champion = window(measure(champion_key), doc["baseline"]["champion"])
        analysis: Analysis = analyse(spec, canary, champion,
                                     self.drift.open_signals_of(model, spec.candidate),
                                     self.drift.open_signals_of(model, d.champion),
                                     now - state.step_started_at)
        doc["analysis"] = {**analysis.to_dict(), "at": now, "step": state.step,
                           "canary": canary.__dict__, "champion": champion.__dict__}
        action = decide(spec, state, analysis, now)
        if action.kind == "none":
            self._save(model, doc, revision, now)
            return
        if action.kind == "weight":
            doc["baseline"] = {"canary": measure(canary_key),
                               "champion": measure(champion_key)}
        self._commit(model, doc, revision, spec, state, action, d, now)

    def _save(self, model: str, doc: dict[str, Any], revision: int, now: float,
              tx: Transaction | None = None) -> None:
        """Write the document if the rollout is still at ``revision`` (else StaleRollout,
        which rolls back whatever else ``tx`` did)."""
        self.rollouts.save(model, doc, revision, now, tx)

    def _commit(self, model: str, doc: dict[str, Any], revision: int, spec: Spec,
                state: State, action: Action, current: Deployment, now: float,
                by: Actor = SYSTEM) -> None:
        """Deployment change + audit + webhook event + rollout state, all or nothing: the
        rollout's compare-and-set comes first, so a stale one changes nothing."""
        doc["state"] = state.to_dict()
        kind, detail = f"rollout.{action.kind}", state.reason or f"step {state.step + 1}"
        edit = deployment_edit(spec, action, current)
        with transaction(self.engine) as tx:
            self._save(model, doc, revision, now, tx)
            if edit is not None:  # a compare-and-set on the revision ``current`` was read at
                change_deployment(self.deployments, self.audit, model, edit,
                                  by, kind, current=current, detail=detail, tx=tx)
            else:
                self.audit.write(AuditRecord(
                    actor=by.name, role=by.role, action=kind, target=f"deployments/{model}",
                    outcome="ok", before=current.to_public(), request_id=by.request_id,
                    detail=detail), tx)
            if action.event is not None:
                event_id = f"{action.event}-{model}-{spec.candidate}-{int(now * 1000)}"
                ev = {"type": action.event, "timestamp": iso(now), "data": {
                    "event_id": event_id, "model": model, "candidate": spec.candidate,
                    "status": state.status, "step": state.step + 1,
                    "weight": spec.steps[state.step], "reason": state.reason,
                    "analysis": doc.get("analysis"), "gateway": self.base_url}}
                enqueue(tx, ev, event_id, self.targets, now, model, action.kind)
        if self.on_transition is not None:
            self.on_transition(model, action.kind, state)


def deployment_edit(spec: Spec, action: Action, current: Deployment) -> Edit | None:
    """What ``action`` does to the deployment; None when it leaves it alone (a pause, or an
    abort whose canary an operator already changed)."""
    candidate = spec.candidate
    if action.kind == "weight":
        return lambda d: apply_patch(d, {"canary": {"version": candidate,
                                                    "weight": action.weight}})
    if action.kind == "promote":
        def promote(d: Deployment) -> Deployment:
            if d.canary is None or d.canary.version != candidate:
                d = apply_patch(d, {"canary": {"version": candidate, "weight": 1.0}})
            return promoted(d)
        return promote
    if action.kind == "abort" and current.canary is not None and \
            current.canary.version == candidate:
        return lambda d: apply_patch(d, {"canary": None})
    return None


def start(engine: Engine, model: str, spec: Spec, by: Actor,
          now: float | None = None, *, cards: CardOf | None = None,
          loader: Loader | None = None) -> dict[str, Any]:
    """Begin a rollout: the candidate becomes the canary at the first step's weight. The
    change is checked (and, given ``cards`` and ``loader``, the candidate loaded) first; then
    one transaction refuses a rollout already running or paused, compares-and-sets the
    deployment, writes the audit row and the rollout."""
    now = time.time() if now is None else now
    deployments, rollouts = DeploymentStore(engine), RolloutStore(engine)
    if deployments.get(model).arms:  # the arms hold the split until the experiment ends
        raise StateConflict("model", "an experiment is running; stop it first")
    change = plan_change(
        deployments, model,
        lambda d: apply_patch(d, {"canary": {"version": spec.candidate,
                                             "weight": spec.steps[0]}}),
        cards=cards, loader=loader, field_of=lambda d, v: "candidate")
    state = State(status="running", step=0, step_started_at=now)
    doc = {"spec": spec.to_dict(), "state": state.to_dict(), "started_at": now,
           "started_by": by.name}
    with transaction(engine) as tx:
        previous = rollouts.get(model, tx)
        if previous and State.from_dict(previous.doc["state"]).status in ("running", "paused"):
            raise StateConflict("model", "a rollout is already running or paused; abort it "
                                         "first")
        commit_change(deployments, AuditLog(engine), change, by, "rollout.start",
                      detail=f"{spec.candidate} at {spec.steps[0]:.0%}", tx=tx)
        rollouts.begin(model, doc, now, previous, tx)
    return doc


def read(engine: Engine, model: str) -> dict[str, Any] | None:
    found = RolloutStore(engine).get(model)
    return found.doc if found else None


def operate(controller: Controller, model: str, command: str, by: Actor,
            now: float | None = None) -> dict[str, Any]:
    """pause | resume | abort | advance, by an operator. When the controller wrote the
    rollout between our read and our write, the command is decided again on what it wrote
    (so pausing a rollout the controller just promoted is a conflict, not a lost write)."""
    now = time.time() if now is None else now
    for attempt in range(OPERATOR_ATTEMPTS):
        try:
            return _operate_once(controller, model, command, by, now)
        except StaleRollout:
            if attempt == OPERATOR_ATTEMPTS - 1:
                raise
    raise AssertionError("unreachable")


def _operate_once(controller: Controller, model: str, command: str, by: Actor,
                  now: float) -> dict[str, Any]:
    found = controller.rollouts.get(model)
    if found is None:
        raise RolloutNotFound(model)
    doc, revision = found.doc, found.revision
    spec, state = Spec.from_dict(doc["spec"]), State.from_dict(doc["state"])
    current = controller.deployments.get(model)
    if command == "pause":
        if state.status != "running":
            raise StateConflict("status", f"the rollout is {state.status}, not running")
        state.status, state.reason = "paused", f"paused by {by.name}"
        action = Action("pause", None, "vigil.rollout.paused")
    elif command == "resume":
        if state.status != "paused":
            raise StateConflict("status", f"the rollout is {state.status}, not paused")
        state.status, state.reason, state.step_started_at = "running", "", now
        doc.pop("baseline", None)  # a fresh window from now
        action = Action("weight", spec.steps[state.step], None)
    elif command == "abort":
        if state.status not in ("running", "paused"):
            raise StateConflict("status", f"the rollout is {state.status}")
        state.status, state.reason = "aborted", f"aborted by {by.name}"
        action = Action("abort", 0.0, "vigil.rollout.aborted")
    elif command == "advance":
        if state.status not in ("running", "paused"):
            raise StateConflict("status", f"the rollout is {state.status}")
        state.status = "running"
        action = advance(spec, state, now)
        doc.pop("baseline", None)
        state.reason = state.reason or f"advanced by {by.name}"
    else:
        raise ValueError(f"unknown rollout command {command!r}")  # the route allows only four
    controller._commit(model, doc, revision, spec, state, action, current, now,  # noqa: SLF001
                       by)
    return read(controller.engine, model) or doc
