"""The experiment controller: starts and stops experiments (the use cases the admin API
calls) and, in the Monitor every tick, looks at each running one: the arms' KPI outcomes and
request statistics since its start, the guardrails, then ``decision``. A conclusion is applied
in one transaction: the experiment's state (a compare-and-set on its revision), the deployment
change through ``control.deployments`` (the arms cleared, or with ``auto_promote`` the winner
promoted, the same change as a promote), the audit rows (``system:experiment``) and the
webhook event ``vigil.experiment.concluded`` in the outbox."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from control.deployments import Actor, CardOf, Loader, change_deployment, commit_change, plan_change
from models.deployment import Deployment, apply_patch, promoted, with_arms
from models.errors import InvalidInput, NotFound, StateConflict
from monitoring.experiments.decision import (
    Design,
    Guardrail,
    breached,
    evaluate,
    thompson_shares,
)
from monitoring.experiments.horizon import fixed_horizon_samples_per_arm, max_samples_per_arm
from monitoring.experiments.msprt import Moments, half_width
from monitoring.quality.stats import VersionStats
from monitoring.retrain.webhooks import Target, enqueue
from monitoring.rollout.controller import counters, iso, window
from store import (
    AuditLog,
    AuditRecord,
    DeploymentStore,
    Engine,
    StaleRevision,
    transaction,
)
from store.experiments import ExperimentStore, StaleExperiment
from store.kpis import KpiStore
from store.rollouts import RolloutStore

log = logging.getLogger("vigil.experiment")
ACTOR = "system:experiment"
SYSTEM = Actor(ACTOR)  # the controller deciding on its own
EVENT = "vigil.experiment.concluded"
VARIANT = "experiment"
MIN_SIZING_OUTCOMES = 30  # the control's outcomes the variance is estimated from at start
BANDIT_FLOOR = 0.05
MAX_HORIZON = 10**12  # samples per arm: a smaller min_effect is refused
PUBLIC = ("model", "status", "decision", "arms", "effects", "started_at", "concluded_at",
          "spec", "control", "max_samples_per_arm", "fixed_horizon_samples_per_arm", "bandit")


def public(doc: dict[str, Any]) -> dict[str, Any]:
    """What the API shows of an experiment."""
    return {k: doc.get(k) for k in PUBLIC if k != "bandit" or doc.get("bandit")}


def sizing_variances(kind: str, direction: int, control: Moments, min_effect: float
                     ) -> tuple[float, float]:
    """The control's and a treatment's variance to size the test with: from the control's
    outcomes so far (a binary KPI's p(1-p) at its rate and at the rate moved by the minimum
    effect); with too few, a binary KPI takes the most variable rate, 0.5."""
    if kind == "binary":
        p = control.mean if control.n >= MIN_SIZING_OUTCOMES else 0.5
        q = min(max(p + direction * min_effect, 0.0), 1.0)
        return max(p * (1 - p), 1e-6), max(q * (1 - q), 1e-6)
    if control.n < MIN_SIZING_OUTCOMES:
        raise StateConflict("primary", f"a continuous KPI needs {MIN_SIZING_OUTCOMES} "
                            "outcomes of the control before its test can be sized "
                            f"({int(control.n)} so far)")
    return control.variance, control.variance


def start(engine: Engine, model: str, spec: dict[str, Any], kind: str, better: str,
          by: Actor, now: float | None = None, *,
          cards: CardOf | None = None, loader: Loader | None = None,
          kpi_better: dict[str, str] | None = None) -> dict[str, Any]:
    """Begin an experiment: size the test, route the arms (a deployment change, checked and
    loaded first), then in one transaction refuse a running rollout or experiment, compare
    and set the deployment, audit, and write the experiment."""
    now = time.time() if now is None else now
    deployments = DeploymentStore(engine)
    arms: dict[str, float] = spec["arms"]
    change = plan_change(deployments, model, lambda d: with_arms(d, arms), cards=cards,
                         loader=loader, field_of=lambda d, v: f"arms.{v}")
    control = change.before.champion if change.before.champion in arms else next(iter(arms))
    direction = 1 if better == "higher" else -1
    sums = [s for (_, v, _, k), s in KpiStore(engine).sums(model).items()
            if v == control and k == spec["primary"]]
    base = Moments(sum(s.n for s in sums), sum(s.total for s in sums),
                   sum(s.total_sq for s in sums))
    if kind == "binary" and spec["min_effect"] >= 1:
        raise InvalidInput("min_effect", "a binary KPI's mean moves by less than 1")
    var_c, var_t = sizing_variances(kind, direction, base, spec["min_effect"])
    alpha_each = spec["alpha"] / max(len(arms) - 1, 1)
    try:
        horizon = max_samples_per_arm(alpha_each, spec["power"], var_c, var_t,
                                      spec["min_effect"])
    except ValueError as exc:  # outside the table
        raise InvalidInput("power" if str(exc).startswith("power") else "alpha",
                           str(exc)) from None
    except OverflowError:
        horizon = MAX_HORIZON + 1
    if horizon > MAX_HORIZON:
        raise InvalidInput("min_effect", f"too small to detect: more than {MAX_HORIZON:,} "
                           "samples per arm")
    doc: dict[str, Any] = {
        "model": model, "spec": spec, "kind": kind, "better": better, "control": control,
        "status": "running", "decision": None, "arms": {}, "effects": [],
        "started_at": iso(now), "concluded_at": None, "started_by": by.name,
        "max_samples_per_arm": horizon,
        "fixed_horizon_samples_per_arm": fixed_horizon_samples_per_arm(
            alpha_each, spec["power"], var_c, var_t, spec["min_effect"]),
        "shares": dict(arms), "kpi_better": kpi_better or {}}
    store = ExperimentStore(engine)
    with transaction(engine) as tx:
        rollout = RolloutStore(engine).get(model, tx)
        if rollout and rollout.doc["state"]["status"] in ("running", "paused"):
            raise StateConflict("model", "a rollout is running or paused; finish it first")
        previous = store.get(model, tx)
        if previous and previous.doc["status"] == "running":
            raise StateConflict("model", "an experiment is already running; stop it first")
        commit_change(deployments, AuditLog(engine), change, by, "experiment.start",
                      detail=f"arms {arms}, primary {spec['primary']}", tx=tx)
        store.begin(model, doc, now, previous, tx)
    return public(doc)


def read(engine: Engine, model: str) -> dict[str, Any] | None:
    found = ExperimentStore(engine).get(model)
    return public(found.doc) if found else None


class ExperimentController:
    def __init__(self, engine: Engine, targets: list[Target], base_url: str = "",
                 rng: np.random.Generator | None = None,
                 on_look: Callable[[str, dict[str, Any]], None] | None = None,
                 owns: Callable[[str], bool] | None = None) -> None:
        self.engine = engine
        # with several replicas, only the Monitor that owns the model's log partition holds
        # its current statistics and may decide (as the rollout controller)
        self.owns = owns
        self.deployments = DeploymentStore(engine)
        self.audit = AuditLog(engine)
        self.store = ExperimentStore(engine)
        self.kpis = KpiStore(engine)
        self.targets = targets
        self.base_url = base_url
        self.rng = rng if rng is not None else np.random.default_rng()
        self.on_look = on_look

    def tick(self, stats: dict[Any, VersionStats], now: float | None = None) -> None:
        now = time.time() if now is None else now
        for found in self.store.all():
            if found.doc["status"] != "running":
                continue
            if self.owns is not None and not self.owns(found.model):
                continue
            try:
                self._look(found.model, found.doc, found.revision, stats, now)
            except (StaleRevision, StaleExperiment):
                log.info("experiment on %s: changed meanwhile; next tick", found.model)
            except Exception:
                log.exception("experiment on %s failed this tick", found.model)
            if self.on_look is not None:
                self.on_look(found.model, found.doc)

    def _look(self, model: str, doc: dict[str, Any], revision: int,
              stats: dict[Any, VersionStats], now: float) -> None:
        spec, arms = doc["spec"], list(doc["spec"]["arms"])
        d = self.deployments.get(model)
        if not d.arms:  # an operator cleared the arms outside the experiment
            self.conclude(model, doc, revision, None, "operator", d, now)
            return
        kpis = self.kpis.sums(model)
        snapshot = {a: {"kpis": {k: [s.n, s.total, s.total_sq]
                                 for (_, v, var, k), s in kpis.items()
                                 if v == a and var == VARIANT},
                        "requests": counters(stats.get((model, a, VARIANT)))} for a in arms}
        if "baseline" not in doc:  # outcomes from the start on
            doc["baseline"] = snapshot
            self._save(model, doc, revision, now)
            return
        base = doc["baseline"]

        def moments(arm: str, kpi: str) -> Moments:
            now_ = Moments(*snapshot[arm]["kpis"].get(kpi, (0, 0, 0)))
            return now_.minus(Moments(*base[arm]["kpis"].get(kpi, (0, 0, 0))))

        design = design_of(doc)
        primary = {a: moments(a, spec["primary"]) for a in arms}
        verdict = evaluate(design, primary)
        doc["arms"] = {a: arm_summary(m, design) for a, m in primary.items()}
        doc["effects"] = [e.to_dict() for e in verdict.effects]
        p_min = doc.setdefault("p_min", {})
        for e in doc["effects"]:
            e["p_value"] = p_min[e["arm"]] = min(p_min.get(e["arm"], 1.0), e["p_value"])
        windows = {a: window(snapshot[a]["requests"], base[a]["requests"]) for a in arms}
        breach = self._guardrail(doc, design, windows, moments)
        if breach is not None:
            doc["guardrail"] = breach
            self.conclude(model, doc, revision, None, "guardrail", d, now)
        elif spec.get("mode") == "bandit":
            self._reallocate(model, doc, revision, primary, design, d, now)
        elif verdict.winner is not None and self._guardrail(
                doc, design, windows, moments, (verdict.winner,), suspected=True):
            self._save(model, doc, revision, now)  # no winner while a guardrail is suspected
        elif verdict.reason is not None:
            self.conclude(model, doc, revision, verdict.winner, verdict.reason, d, now)
        else:
            self._save(model, doc, revision, now)

    def _guardrail(self, doc: dict[str, Any], design: Design, windows: dict[str, Any],
                   moments: Callable[[str, str], Moments], arms: tuple[str, ...] = (),
                   suspected: bool = False) -> str | None:
        """The first guardrail an arm breaks (or, ``suspected``, whose point estimate is past
        its limit), named with the arm; None when none is."""
        c = design.control
        for g in (Guardrail(**g) for g in doc["spec"].get("guardrails", [])):
            for arm in arms or design.treatments:
                if g.metric == "latency_p95_ms":
                    big = min(windows[c].requests, windows[arm].requests) >= design.min_samples
                    hit = big and breached(g, windows[c].p95, windows[arm].p95, design.alpha)
                elif g.metric == "error_rate":
                    hit = breached(g, error_moments(windows[c]), error_moments(windows[arm]),
                                   design.alpha, min_samples=design.min_samples,
                                   suspected=suspected)
                else:
                    way = 1 if doc.get("kpi_better", {}).get(g.kpi) != "lower" else -1
                    hit = breached(g, moments(c, str(g.kpi)), moments(arm, str(g.kpi)),
                                   design.alpha, way, design.min_samples, suspected)
                if hit:
                    return f"{g.name} of {arm}"
        return None

    def _reallocate(self, model: str, doc: dict[str, Any], revision: int,
                    primary: dict[str, Moments], design: Design, d: Deployment,
                    now: float) -> None:
        """Bandit mode: Thompson sampling moves the shares (within the floor); no
        significance is concluded, only each arm's probability of being best and the regret
        against the best arm in hindsight."""
        if min(m.n for m in primary.values()) < design.min_samples:
            self._save(model, doc, revision, now)
            return
        shares, prob = thompson_shares(primary, doc["kind"] == "binary", design.direction,
                                       BANDIT_FLOOR, self.rng)
        best = max(design.direction * m.mean for m in primary.values())
        regret = sum(m.n * (best - design.direction * m.mean) for m in primary.values())
        doc["bandit"] = {"probability_best": prob, "shares": shares, "regret": regret}
        moved = any(abs(shares[a] - doc["shares"].get(a, 0)) > 0.01 for a in shares)
        with transaction(self.engine) as tx:
            if moved:
                doc["shares"] = shares
            self.store.save(model, doc, revision, now, tx)
            if moved:
                change_deployment(self.deployments, self.audit, model,
                                  lambda dd: with_arms(dd, shares), SYSTEM,
                                  "experiment.reallocate", current=d, tx=tx)

    def _save(self, model: str, doc: dict[str, Any], revision: int, now: float) -> None:
        with transaction(self.engine) as tx:
            self.store.save(model, doc, revision, now, tx)

    def conclude(self, model: str, doc: dict[str, Any], revision: int, winner: str | None,
                 reason: str, current: Deployment, now: float, by: Actor = SYSTEM
                 ) -> None:
        """State, deployment, audit and webhook event, all or nothing."""
        doc["status"] = "stopped" if reason == "operator" else "concluded"
        doc["decision"] = {"winner": winner, "reason": reason}
        doc["concluded_at"] = iso(now)
        promote = bool(winner and doc["spec"].get("auto_promote"))
        detail = f"{reason}" + (f": {winner} wins" if winner else "") + \
            (f" ({doc['guardrail']})" if reason == "guardrail" else "")
        with transaction(self.engine) as tx:
            self.store.save(model, doc, revision, now, tx)
            if current.arms:
                edit = (promote_winner(winner) if promote and winner is not None
                        else lambda d: with_arms(d, None))
                change_deployment(self.deployments, self.audit, model, edit,
                                  by, "promote" if promote else
                                  "experiment.stop", current=current, detail=detail, tx=tx)
            self.audit.write(AuditRecord(
                actor=by.name, role=by.role, action="experiment.concluded",
                target=f"experiments/{model}", outcome="ok", after=public(doc),
                request_id=by.request_id, detail=detail), tx)
            event_id = f"{EVENT}-{model}-{int(now * 1000)}"
            enqueue(tx, {"type": EVENT, "timestamp": iso(now), "data": {
                "event_id": event_id, **public(doc), "promoted": promote,
                "gateway": self.base_url}}, event_id, self.targets, now, model, reason)


def stop(controller: ExperimentController, model: str, by: Actor,
         now: float | None = None) -> dict[str, Any]:
    """An operator's stop: no winner, the champion serves alone again."""
    now = time.time() if now is None else now
    found = controller.store.get(model)
    if found is None:
        raise NotFound("model", "no experiment", message=f"no experiment for model '{model}'")
    if found.doc["status"] != "running":
        raise StateConflict("status", f"the experiment is {found.doc['status']}")
    controller.conclude(model, found.doc, found.revision, None, "operator",
                        controller.deployments.get(model), now, by)
    return read(controller.engine, model) or public(found.doc)


def promote_winner(winner: str) -> Callable[[Deployment], Deployment]:
    """The arms cleared and the winner promoted: the change ``POST …/promote`` makes, with
    the winner as the canary at full weight first (and no longer a shadow)."""
    def edit(d: Deployment) -> Deployment:
        shadows = [{"version": s.version, "sample_rate": s.sample_rate}
                   for s in d.shadows if s.version != winner]
        return promoted(apply_patch(with_arms(d, None), {
            "canary": {"version": winner, "weight": 1.0}, "shadows": shadows}))
    return edit


def design_of(doc: dict[str, Any]) -> Design:
    spec = doc["spec"]
    return Design(control=doc["control"], arms=tuple(spec["arms"]),
                  min_effect=spec["min_effect"], alpha=spec["alpha"],
                  max_samples_per_arm=doc["max_samples_per_arm"],
                  direction=1 if doc.get("better", "higher") == "higher" else -1)


def error_moments(w: Any) -> Moments:
    """A window's errors as 0/1 outcomes of its requests."""
    return Moments(w.requests, w.errors, w.errors)


def arm_summary(m: Moments, design: Design) -> dict[str, Any]:
    """An arm's count, mean and always-valid confidence interval for its mean."""
    if m.n <= 0:
        return {"n": 0, "mean": None, "ci": [None, None]}
    h = half_width(m.variance / m.n, design.min_effect, design.alpha_each)
    return {"n": int(m.n), "mean": m.mean, "ci": [m.mean - h, m.mean + h]}

