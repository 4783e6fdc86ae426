"""Experiments: the pure decision code on seeded simulations (A/A false positives, power on a
true lift, guardrails, the bandit), the truncation table, routing by arms, and the controller
through the real Monitor and store (conclusion, promotion, audit, outbox, the 409s)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import sqlalchemy as sa
from hypothesis import given
from hypothesis import strategies as st

from control.deployments import Actor
from load_tests import experiments_sim as sim
from load_tests.experiments_monitor import Traffic, aa_through_monitor
from models.deployment import Deployment, with_arms
from models.errors import DeploymentInvalid, StateConflict
from monitoring.experiments.controller import read, start, stop
from monitoring.experiments.decision import Design, Guardrail, breached, evaluate
from monitoring.experiments.horizon import (
    fixed_horizon_samples_per_arm,
    max_samples_per_arm,
    normalized_horizon,
)
from monitoring.experiments.msprt import Moments, compare
from monitoring.rollout.analysis import Spec, Window, kpi_gate
from monitoring.rollout.controller import Controller as RolloutController
from monitoring.rollout.controller import read as rollout_doc
from monitoring.rollout.controller import start as start_rollout
from service.routing import EXPERIMENT, route
from store import AuditLog, DeploymentStore, Outbox

ALICE = Actor("alice", "operator")

# ----------------------------------------------------------------------------- pure


def test_the_fixed_horizon_matches_the_textbook_and_the_msprt_needs_more() -> None:
    var = (0.1 * 0.9, 0.12 * 0.88)
    assert fixed_horizon_samples_per_arm(0.05, 0.8, *var, 0.02) == 3839
    assert 6000 < max_samples_per_arm(0.05, 0.8, *var, 0.02) < 6600  # ~25.7 units
    # tighter alpha or more power: more samples
    assert normalized_horizon(0.025, 0.8) > normalized_horizon(0.05, 0.8)
    assert normalized_horizon(0.05, 0.9) > normalized_horizon(0.05, 0.8)
    with pytest.raises(ValueError, match="out of reach"):
        normalized_horizon(0.2, 0.95)


def test_the_p_value_and_the_interval_agree() -> None:
    rng = np.random.default_rng(7)
    for _ in range(200):
        n = int(rng.integers(200, 5000))
        a, b = rng.binomial(n, 0.1), rng.binomial(n, rng.uniform(0.08, 0.14))
        c = compare(Moments(n, a, a), Moments(n, b, b), tau=0.02, alpha=0.05)
        assert (c.p_value <= 0.05) == (c.ci[0] > 0 or c.ci[1] < 0)


def test_a_a_experiments_rarely_name_a_winner() -> None:
    share, se, runs = sim.aa(200, seed=11)
    assert share <= 0.05 + 2 * se
    assert all(r.n <= sim.design(0.1).max_samples_per_arm for r in runs)


def test_a_true_lift_is_detected_before_the_truncation_most_of_the_time() -> None:
    runs = sim.lift(100, seed=12)
    detected = [r for r in runs if r.winner == "v2"]
    assert len(detected) >= 70  # 80% in the 500-run simulation (load_tests)
    assert not [r for r in runs if r.winner == "v1"]


def test_a_guardrail_breach_stops_without_a_winner() -> None:
    runs = sim.guardrail(40, seed=13)
    assert Counter(r.reason for r in runs)["guardrail"] >= 36
    assert all(r.winner is None for r in runs)


def test_three_arms_split_alpha_and_pick_the_best() -> None:
    d = Design("v1", ("v1", "v2", "v3"), 0.02, 0.05, 8000)
    assert d.alpha_each == 0.025
    v = evaluate(d, {"v1": Moments(6000, 600, 600), "v2": Moments(6000, 780, 780),
                     "v3": Moments(6000, 840, 840)})
    assert (v.reason, v.winner) == ("significant", "v3")
    lower = Design("v1", ("v1", "v2"), 0.02, 0.05, 8000, direction=-1)
    assert evaluate(lower, {"v1": Moments(6000, 600, 600),
                            "v2": Moments(6000, 780, 780)}).winner is None


def test_latency_and_kpi_guardrails() -> None:
    assert breached(Guardrail(metric="latency_p95_ms", max_ratio=1.5), 10.0, 16.0, 0.05)
    assert not breached(Guardrail(metric="latency_p95_ms", max_ratio=1.5), 10.0, 14.0, 0.05)
    revenue = Guardrail(kpi="revenue", max_decrease=0.05)
    rng = np.random.default_rng(3)
    c, t = rng.normal(10, 2, 5000), rng.normal(8, 2, 5000)
    mc, mt = (Moments(len(x), x.sum(), (x * x).sum()) for x in (c, t))
    assert breached(revenue, mc, mt, 0.05) and not breached(revenue, mc, mc, 0.05)


def test_the_bandit_regrets_less_than_a_fixed_split() -> None:
    rng = np.random.default_rng(5)
    total = 6000
    bandit = np.mean([sim.run_bandit({"v1": 0.1, "v2": 0.12}, total, rng) for _ in range(5)])
    assert bandit < total / 2 * 0.02


# ----------------------------------------------------------------------------- routing


@given(st.text(min_size=1, max_size=20))
def test_an_arm_is_sticky_by_key(key: str) -> None:
    d = with_arms(Deployment(model="m", champion="v1", salt="s"), {"v1": 0.5, "v2": 0.5})
    first = route(d, key)
    assert first is not None and first.variant == EXPERIMENT
    assert route(d, key) == first


def test_arms_take_the_split_at_their_shares() -> None:
    d = with_arms(Deployment(model="m", champion="v1", salt="s"),
                  {"v1": 0.2, "v2": 0.3, "v3": 0.5})
    seen = Counter(r.version for i in range(20_000) if (r := route(d, f"u{i}")) is not None)
    for v, share in (("v1", 0.2), ("v2", 0.3), ("v3", 0.5)):
        assert abs(seen[v] / 20_000 - share) < 0.015
    with pytest.raises(DeploymentInvalid):
        with_arms(d, {"v1": 0.5, "v2": 0.6})


# ----------------------------------------------------------------------------- controller

SPEC: dict[str, Any] = {"arms": {"v1": 0.5, "v2": 0.5}, "primary": "conversion",
                        "min_effect": 0.02, "alpha": 0.05, "power": 0.8,
                        "guardrails": [{"metric": "error_rate", "max_increase": 0.01}],
                        "mode": "fixed", "auto_promote": True}


@pytest.fixture
def traffic(engine: sa.Engine, tmp_path: Path) -> Traffic:
    DeploymentStore(engine).create(Deployment(model="m", champion="v1", salt="t"))
    return Traffic(engine, tmp_path, 21)


def test_a_winner_is_promoted_audited_and_announced(traffic: Traffic) -> None:
    doc = start(traffic.engine, "m", SPEC, "binary", "higher", ALICE,
                traffic.now)
    # no outcomes of the control yet: sized at the most variable rate, 0.5
    assert (doc["status"], doc["fixed_horizon_samples_per_arm"]) == ("running", 9804)
    assert doc["max_samples_per_arm"] > 15_000
    for _ in range(40):
        traffic.run({"v1": 0.10, "v2": 0.20}, {}, 250)
        if read(traffic.engine, "m")["status"] != "running":  # type: ignore[index]
            break
    got = read(traffic.engine, "m")
    assert got is not None and got["decision"] == {"winner": "v2", "reason": "significant"}
    assert got["arms"]["v2"]["mean"] > got["arms"]["v1"]["mean"]
    effect = got["effects"][0]
    assert (effect["arm"], effect["vs"]) == ("v2", "v1") and effect["p_value"] <= 0.05
    d = DeploymentStore(traffic.engine).get("m")
    assert (d.champion, d.arms) == ("v2", ())
    actions = [(r.actor, r.action) for r in AuditLog(traffic.engine).recent(10)]
    assert ("system:experiment", "promote") in actions
    assert ("system:experiment", "experiment.concluded") in actions
    assert ("alice", "experiment.start") in actions
    events = Outbox(traffic.engine).deliveries()
    assert [e["type"] for e in events] == ["vigil.experiment.concluded"]


def test_a_guardrail_breach_keeps_the_champion(traffic: Traffic) -> None:
    start(traffic.engine, "m", SPEC, "binary", "higher", ALICE, traffic.now)
    for _ in range(30):
        traffic.run({"v1": 0.10, "v2": 0.20}, {"v2": 0.08}, 250)
        if read(traffic.engine, "m")["status"] != "running":  # type: ignore[index]
            break
    got = read(traffic.engine, "m")
    assert got is not None and got["decision"] == {"winner": None, "reason": "guardrail"}
    d = DeploymentStore(traffic.engine).get("m")
    assert (d.champion, d.arms) == ("v1", ())


def test_rollouts_and_experiments_refuse_each_other(traffic: Traffic) -> None:
    engine = traffic.engine
    start(engine, "m", SPEC, "binary", "higher", ALICE, traffic.now)
    with pytest.raises(StateConflict, match="experiment is running"):
        start_rollout(engine, "m", Spec.from_dict({"candidate": "v2"}), ALICE)
    with pytest.raises(StateConflict, match="already running"):
        start(engine, "m", SPEC, "binary", "higher", ALICE, traffic.now)
    stopped = stop(traffic.controller, "m", ALICE, traffic.now)
    assert (stopped["status"], stopped["decision"]) == (
        "stopped", {"winner": None, "reason": "operator"})
    assert DeploymentStore(engine).get("m").arms == ()
    start_rollout(engine, "m", Spec.from_dict({"candidate": "v2"}), ALICE)
    with pytest.raises(StateConflict, match="rollout is running"):
        start(engine, "m", SPEC, "binary", "higher", ALICE, traffic.now)


def test_a_bandit_moves_traffic_to_the_better_arm_and_never_concludes(traffic: Traffic
                                                                      ) -> None:
    spec = {**SPEC, "mode": "bandit", "guardrails": []}
    start(traffic.engine, "m", spec, "binary", "higher", ALICE, traffic.now)
    for _ in range(12):
        traffic.run({"v1": 0.10, "v2": 0.30}, {}, 250)
    got = read(traffic.engine, "m")
    assert got is not None and got["status"] == "running" and got["decision"] is None
    assert got["bandit"]["probability_best"]["v2"] > 0.95
    shares = {a.version: a.share for a in DeploymentStore(traffic.engine).get("m").arms}
    assert 0.9 <= shares["v2"] <= 0.95 + 1e-9 and shares["v1"] >= 0.05 - 1e-9  # the floor
    reallocations = [r for r in AuditLog(traffic.engine).recent(50)
                     if r.action == "experiment.reallocate"]
    assert reallocations and all(r.actor == "system:experiment" for r in reallocations)


# ----------------------------------------------------------------------------- rollout KPI gate


def test_the_kpi_gate_uses_a_one_sided_bound() -> None:
    spec = Spec.from_dict({"candidate": "v2", "min_labels": 100, "kpi_gate": {
        "kpi": "conversion", "margin": 0.01, "better": "higher"}})
    champion = Window(kpi_n=3000, kpi_mean=0.10, kpi_var=0.09)
    assert kpi_gate(spec, Window(kpi_n=3000, kpi_mean=0.05, kpi_var=0.0475),
                    champion).verdict == "fail"
    assert kpi_gate(spec, Window(kpi_n=3000, kpi_mean=0.10, kpi_var=0.09),
                    champion).verdict == "pass"
    assert kpi_gate(spec, Window(kpi_n=50, kpi_mean=0.0, kpi_var=0.0),
                    champion).verdict == "insufficient"
    lower = Spec.from_dict({**spec.to_dict(), "kpi_gate": {"kpi": "churn", "margin": 0.01,
                                                           "better": "lower"}})
    assert kpi_gate(lower, Window(kpi_n=3000, kpi_mean=0.05, kpi_var=0.0475),
                    champion).verdict == "pass"


def test_a_rollout_whose_canary_converts_worse_is_aborted(traffic: Traffic) -> None:
    spec = Spec.from_dict({"candidate": "v2", "steps": [0.5, 1.0], "min_seconds": 0,
                           "min_requests": 100, "min_labels": 100, "max_wait_seconds": 600,
                           "js_max": 1.0, "kpi_gate": {"kpi": "conversion", "margin": 0.01,
                                                       "better": "higher"}})
    start_rollout(traffic.engine, "m", spec, ALICE, traffic.now)
    rollouts = RolloutController(traffic.engine, [])
    for _ in range(20):
        traffic.run({"v1": 0.20, "v2": 0.05}, {}, 250)
        rollouts.tick(traffic.monitor.stats, traffic.now)
        if rollout_doc(traffic.engine, "m")["state"]["status"] != "running":  # type: ignore
            break
    doc = rollout_doc(traffic.engine, "m")
    assert doc is not None and doc["state"]["status"] == "aborted"
    gate = next(g for g in doc["analysis"]["gates"] if g["name"] == "kpi")
    assert gate["verdict"] == "fail" and gate["value"] < -0.1


def test_a_a_through_the_real_monitor_names_no_winner() -> None:
    runs = aa_through_monitor(2, seed=31, min_effect=0.1)
    assert [r["status"] for r in runs] == ["concluded", "concluded"]
    assert all(r["decision"]["winner"] is None for r in runs)
    assert all(r["decision"]["reason"] == "futility" for r in runs)


def test_promoting_a_winner_that_is_also_a_shadow() -> None:
    from models.deployment import Canary, Shadow
    from monitoring.experiments.controller import promote_winner

    d = with_arms(Deployment(model="m", champion="v1", canary=Canary("v2", 0.1),
                             shadows=(Shadow("v3"), Shadow("v4", 0.5)), salt="s"),
                  {"v1": 0.5, "v3": 0.5})
    after = promote_winner("v3")(d)
    assert (after.champion, after.canary, after.arms) == ("v3", None, ())
    assert [s.version for s in after.shadows] == ["v4"] and after.history == ("v1",)
