"""Automated canary analysis (pure): gates over a step's window and the rollout state machine.

Each step of a rollout puts the canary at a weight, waits at least ``min_seconds`` and
``min_requests``, then compares canary with champion over the step's window:

* ``error_rate`` — canary not worse than the champion by more than ``error_margin``: fails only
  when a one-sided two-proportion z-test says so at ``alpha`` (Agresti–Caffo smoothing);
* ``latency_p95`` — fails when the canary's p95 is both more than ``latency_ratio`` times the
  champion's and more than ``latency_slack_ms`` above it: a ratio alone turns scheduler noise on
  sub-millisecond latencies into aborts (Flagger's request-duration check is absolute for the
  same reason);
* ``prediction_divergence`` — Jensen–Shannon divergence (base 2) of the predicted class
  distributions (or of value histograms), at most ``js_max``;
* ``drift`` — no open drift alarm on the canary that the champion does not share;
* ``quality`` — on joined labels, accuracy (MAE for regressors) not worse by more than
  ``quality_margin`` with a one-sided confidence bound, not a point estimate;
* ``kpi`` — with a ``kpi_gate`` (``{"kpi", "margin", "better"}``), the canary's mean of a
  business KPI from ``/feedback`` not worse than the champion's by more than ``margin``, with
  the same one-sided bound as the quality gate.

The analysis is ``Successful`` (every gate passes: next step, or promote after the last),
``Failed`` (any gate fails: abort — canary cleared, champion untouched) or ``Inconclusive``
(not enough evidence yet: stay; pause once ``max_wait_seconds`` have passed on top of the step).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from statistics import NormalDist
from typing import Any

PASS, FAIL, INSUFFICIENT = "pass", "fail", "insufficient"
SUCCESSFUL, FAILED, INCONCLUSIVE = "Successful", "Failed", "Inconclusive"


@dataclass(frozen=True)
class Spec:
    candidate: str
    steps: tuple[float, ...] = (0.05, 0.25, 0.5, 1.0)
    min_seconds: float = 60.0
    min_requests: int = 200
    min_labels: int = 100
    require_labels: bool = False  # the quality gate must pass (else it only can fail)
    max_wait_seconds: float = 600.0
    alpha: float = 0.05
    error_margin: float = 0.01
    latency_ratio: float = 1.5
    latency_slack_ms: float = 5.0
    js_max: float = 0.05
    quality_margin: float = 0.02
    kpi_gate: dict[str, Any] | None = None  # {"kpi", "margin", "better": higher | lower}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Spec:
        d = dict(d)
        if "steps" in d:
            d["steps"] = tuple(float(s) for s in d["steps"])
        return cls(**d)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "steps": list(self.steps)}


@dataclass
class Window:
    """One variant's evidence over the step: counts since the step started."""

    requests: int = 0
    errors: int = 0
    p95: float | None = None
    distribution: dict[str, float] = field(default_factory=dict)  # class or bin -> count
    labelled: int = 0
    score: float | None = None  # accuracy (classifier) or -MAE (regressor): higher is better
    score_var: float | None = None  # per-label variance of the score's terms
    kpi_n: float = 0.0  # the gated KPI's outcomes: count, mean and variance
    kpi_mean: float | None = None
    kpi_var: float | None = None


@dataclass
class Gate:
    name: str
    verdict: str
    value: float | None
    threshold: float | None
    samples: int
    detail: str = ""


@dataclass
class Analysis:
    verdict: str
    gates: list[Gate]

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "gates": [asdict(g) for g in self.gates]}


def _z(alpha: float) -> float:
    return NormalDist().inv_cdf(1 - alpha)


def error_gate(spec: Spec, canary: Window, champion: Window) -> Gate:
    n_c, n_h = canary.requests, champion.requests
    if n_c < spec.min_requests or n_h < spec.min_requests:
        return Gate("error_rate", INSUFFICIENT, None, spec.error_margin, n_c)
    p_c = (canary.errors + 1) / (n_c + 2)
    p_h = (champion.errors + 1) / (n_h + 2)
    se = math.sqrt(p_c * (1 - p_c) / (n_c + 2) + p_h * (1 - p_h) / (n_h + 2))
    z = (p_c - p_h - spec.error_margin) / se
    diff = canary.errors / n_c - champion.errors / n_h
    return Gate("error_rate", FAIL if z > _z(spec.alpha) else PASS, round(diff, 6),
                spec.error_margin, n_c, f"z={z:.2f} against {_z(spec.alpha):.2f}")


def latency_gate(spec: Spec, canary: Window, champion: Window) -> Gate:
    if canary.requests < spec.min_requests or not canary.p95 or not champion.p95:
        return Gate("latency_p95", INSUFFICIENT, None, spec.latency_ratio, canary.requests)
    ratio = canary.p95 / champion.p95
    extra_ms = (canary.p95 - champion.p95) * 1000
    slower = ratio > spec.latency_ratio and extra_ms > spec.latency_slack_ms
    return Gate("latency_p95", FAIL if slower else PASS, round(ratio, 4), spec.latency_ratio,
                canary.requests, f"canary p95 {canary.p95 * 1000:.2f} ms, champion "
                f"{champion.p95 * 1000:.2f} ms ({extra_ms:+.2f} ms; slack "
                f"{spec.latency_slack_ms:g} ms)")


def js_divergence(p: dict[str, float], q: dict[str, float]) -> float:
    keys = set(p) | set(q)
    sp, sq = sum(p.values()), sum(q.values())
    if not sp or not sq:
        return 0.0
    js = 0.0
    for k in keys:
        a, b = p.get(k, 0.0) / sp, q.get(k, 0.0) / sq
        m = (a + b) / 2
        if a:
            js += 0.5 * a * math.log2(a / m)
        if b:
            js += 0.5 * b * math.log2(b / m)
    return js


def divergence_gate(spec: Spec, canary: Window, champion: Window) -> Gate:
    if canary.requests < spec.min_requests or champion.requests < spec.min_requests:
        return Gate("prediction_divergence", INSUFFICIENT, None, spec.js_max, canary.requests)
    js = js_divergence(canary.distribution, champion.distribution)
    return Gate("prediction_divergence", FAIL if js > spec.js_max else PASS, round(js, 6),
                spec.js_max, canary.requests)


def drift_gate(canary_alarms: set[str], champion_alarms: set[str]) -> Gate:
    own = sorted(canary_alarms - champion_alarms)
    return Gate("drift", FAIL if own else PASS, float(len(own)), 0.0, 0,
                ", ".join(own) if own else "no alarm of the canary's own")


def quality_gate(spec: Spec, canary: Window, champion: Window) -> Gate:
    n_c, n_h = canary.labelled, champion.labelled
    if n_c < spec.min_labels or n_h < spec.min_labels or canary.score is None or \
            champion.score is None:
        return Gate("quality", INSUFFICIENT, None, -spec.quality_margin, n_c)
    diff = canary.score - champion.score
    se = math.sqrt((canary.score_var or 0.0) / n_c + (champion.score_var or 0.0) / n_h)
    upper = diff + _z(spec.alpha) * se  # the canary is at most this much better
    verdict = FAIL if upper < -spec.quality_margin else PASS
    return Gate("quality", verdict, round(diff, 6), -spec.quality_margin, n_c,
                f"one-sided upper bound {upper:.4f}")


def kpi_gate(spec: Spec, canary: Window, champion: Window) -> Gate:
    """The canary's KPI mean not worse than the champion's by more than the margin, in the
    KPI's better direction, at a one-sided bound (as ``quality_gate``)."""
    g = spec.kpi_gate or {}
    margin, way = float(g.get("margin", 0.0)), -1 if g.get("better") == "lower" else 1
    n_c, n_h = canary.kpi_n, champion.kpi_n
    if n_c < spec.min_labels or n_h < spec.min_labels or canary.kpi_mean is None or \
            champion.kpi_mean is None:
        return Gate("kpi", INSUFFICIENT, None, -margin, int(n_c), str(g.get("kpi")))
    diff = way * (canary.kpi_mean - champion.kpi_mean)
    se = math.sqrt((canary.kpi_var or 0.0) / n_c + (champion.kpi_var or 0.0) / n_h)
    upper = diff + _z(spec.alpha) * se
    return Gate("kpi", FAIL if upper < -margin else PASS, round(diff, 6), -margin, int(n_c),
                f"{g.get('kpi')}: one-sided upper bound {upper:.4f}")


def analyse(spec: Spec, canary: Window, champion: Window, canary_alarms: set[str],
            champion_alarms: set[str], elapsed: float) -> Analysis:
    gates = [error_gate(spec, canary, champion), latency_gate(spec, canary, champion),
             divergence_gate(spec, canary, champion),
             drift_gate(canary_alarms, champion_alarms),
             quality_gate(spec, canary, champion)]
    if spec.kpi_gate:
        gates.append(kpi_gate(spec, canary, champion))
    if any(g.verdict == FAIL for g in gates):
        return Analysis(FAILED, gates)
    needed = [g for g in gates if g.name not in ("quality", "kpi") or spec.require_labels]
    if elapsed < spec.min_seconds or any(g.verdict == INSUFFICIENT for g in needed):
        return Analysis(INCONCLUSIVE, gates)
    return Analysis(SUCCESSFUL, gates)


# ----------------------------------------------------------------------------- state machine


@dataclass
class State:
    status: str = "running"  # running | paused | promoted | aborted
    step: int = 0
    step_started_at: float = 0.0
    reason: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> State:
        return cls(**d)


@dataclass(frozen=True)
class Action:
    kind: str  # none | weight | promote | abort | pause
    weight: float | None = None
    event: str | None = None  # vigil.rollout.promoted | aborted | paused | advanced


def decide(spec: Spec, state: State, analysis: Analysis, now: float) -> Action:
    """What the controller does with an analysis; ``state`` is updated in place."""
    if state.status != "running":
        return Action("none")
    step_age = now - state.step_started_at
    entry = {"at": now, "step": state.step, "weight": spec.steps[state.step],
             "analysis": analysis.to_dict()}
    if analysis.verdict == FAILED:
        state.status = "aborted"
        failed = [g.name for g in analysis.gates if g.verdict == FAIL]
        state.reason = f"gate(s) failed at step {state.step + 1}: {', '.join(failed)}"
        state.history.append({**entry, "decision": "aborted"})
        return Action("abort", 0.0, "vigil.rollout.aborted")
    if analysis.verdict == INCONCLUSIVE:
        if step_age >= spec.min_seconds + spec.max_wait_seconds:
            state.status = "paused"
            state.reason = f"not enough evidence at step {state.step + 1} after " \
                           f"{step_age:.0f} s"
            state.history.append({**entry, "decision": "paused"})
            return Action("pause", None, "vigil.rollout.paused")
        return Action("none")
    state.history.append({**entry, "decision": "advanced"})
    return advance(spec, state, now)


def advance(spec: Spec, state: State, now: float) -> Action:
    """The next step, or promotion: a step at weight 1.0 is the promotion itself (with no
    champion traffic left there is nothing to compare)."""
    if state.step + 1 >= len(spec.steps) or spec.steps[state.step + 1] >= 1.0:
        state.status = "promoted"
        state.reason = f"every step passed; {spec.candidate} is the champion"
        return Action("promote", None, "vigil.rollout.promoted")
    state.step += 1
    state.step_started_at = now
    return Action("weight", spec.steps[state.step], "vigil.rollout.advanced")
