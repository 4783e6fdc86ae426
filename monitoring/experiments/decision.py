"""What an experiment concludes from its arms' outcomes (pure): ``evaluate`` for the primary
KPI (significant, futility, or go on), ``breached`` for the guardrails, ``thompson_shares``
for the bandit.

With ``k`` arms each is tested against the control at ``alpha/(k-1)`` (Bonferroni), with the
mSPRT of ``monitoring.experiments.msprt``, so the family-wise false-positive rate stays under
``alpha`` however often the Monitor looks. Conclusions:

- ``significant``: an arm is better than the control with an always-valid p-value under
  ``alpha/(k-1)``; the winner is the best such arm;
- ``futility``: every arm's confidence sequence excludes a gain of ``min_effect``, or every arm
  reached ``max_samples_per_arm`` (the truncation): no winner;
- ``guardrail``: a guardrail is breached by some arm: stop, the champion stays.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from monitoring.experiments.msprt import Comparison, Moments, compare

MIN_SAMPLES = 100  # per arm before any look: the normal approximation needs a few outcomes


@dataclass(frozen=True)
class Design:
    """An experiment's test: the control arm, the arms tested against it, the primary KPI's
    direction (+1 higher is better, -1 lower), its minimum effect, alpha and the truncation."""

    control: str
    arms: tuple[str, ...]
    min_effect: float
    alpha: float
    max_samples_per_arm: int
    direction: int = 1
    min_samples: int = MIN_SAMPLES

    @property
    def treatments(self) -> tuple[str, ...]:
        return tuple(a for a in self.arms if a != self.control)

    @property
    def alpha_each(self) -> float:
        """Bonferroni: each treatment against the control at alpha/(k-1)."""
        return self.alpha / max(len(self.treatments), 1)


@dataclass(frozen=True)
class Effect:
    arm: str
    vs: str
    comparison: Comparison

    def to_dict(self) -> dict[str, Any]:
        c = self.comparison
        return {"arm": self.arm, "vs": self.vs, "lift": c.lift, "ci": list(c.ci),
                "p_value": c.p_value}


@dataclass(frozen=True)
class Verdict:
    """``reason`` None: go on. Else the conclusion, with its winner when significant."""

    reason: str | None
    winner: str | None = None
    effects: list[Effect] = field(default_factory=list)


def evaluate(design: Design, outcomes: Mapping[str, Moments]) -> Verdict:
    """One look at the primary KPI: each treatment against the control.

    >>> d = Design("v1", ("v1", "v2"), min_effect=0.02, alpha=0.05, max_samples_per_arm=6000)
    >>> evaluate(d, {"v1": Moments(4000, 400, 400), "v2": Moments(4000, 560, 560)}).winner
    'v2'
    """
    control = outcomes.get(design.control, Moments())
    effects = [Effect(arm, design.control,
                      compare(control, outcomes.get(arm, Moments()), design.min_effect,
                              design.alpha_each))
               for arm in design.treatments]
    counts = [outcomes.get(a, Moments()).n for a in design.arms]
    if min(counts) < design.min_samples:
        return Verdict(None, None, effects)
    s = design.direction
    better = [e for e in effects
              if e.comparison.p_value <= design.alpha_each and s * e.comparison.lift > 0]
    if better:
        best = max(better, key=lambda e: s * e.comparison.lift)
        return Verdict("significant", best.arm, effects)
    upper = [e.comparison.ci[1] if s > 0 else -e.comparison.ci[0] for e in effects]
    if all(u < design.min_effect for u in upper) or min(counts) >= design.max_samples_per_arm:
        return Verdict("futility", None, effects)
    return Verdict(None, None, effects)


@dataclass(frozen=True)
class Guardrail:
    """``metric`` error_rate (``max_increase``, absolute) or latency_p95_ms (``max_ratio``),
    or a KPI (``max_decrease``, a fraction of the control's mean, in the KPI's bad
    direction)."""

    metric: str | None = None
    kpi: str | None = None
    max_increase: float | None = None
    max_ratio: float | None = None
    max_decrease: float | None = None

    @property
    def name(self) -> str:
        return self.metric or f"kpi:{self.kpi}"


def breached(g: Guardrail, control: Any, arm: Any, alpha: float, direction: int = 1,
             min_samples: int = MIN_SAMPLES, suspected: bool = False) -> bool:
    """Whether ``arm`` breaks ``g`` against ``control``. Error rates and KPIs are
    ``Moments`` (errors as 0/1 outcomes) and breach when the whole always-valid confidence
    sequence of the difference is past the limit; latency is a p95 in ms (a float, or None
    with too few requests) and breaches on the point ratio. ``suspected``: the point estimate
    alone is past the limit (a winner is not declared while a guardrail is suspected)."""
    if g.metric == "latency_p95_ms":
        return (control is not None and arm is not None and control > 0
                and g.max_ratio is not None and arm / control > g.max_ratio)
    if control.n < min_samples or arm.n < min_samples:
        return False
    scale = max(control.variance, arm.variance) ** 0.5 or 1e-3
    c = compare(control, arm, tau=scale / 10, alpha=alpha)
    lo, hi = (c.lift, c.lift) if suspected else c.ci
    if g.metric == "error_rate" and g.max_increase is not None:
        return lo > g.max_increase
    if g.kpi is not None and g.max_decrease is not None:
        limit = g.max_decrease * abs(control.mean)
        return (-hi if direction > 0 else lo) > limit  # the least bad the arm can be
    return False


def thompson_shares(arms: Mapping[str, Moments], binary: bool, direction: int, floor: float,
                    rng: np.random.Generator, draws: int = 4000) -> tuple[dict[str, float],
                                                                          dict[str, float]]:
    """Bandit mode: each arm's posterior probability of being best (Beta(1+s, 1+f) for a
    binary KPI, Normal(mean, var/n) for a continuous one) and the shares that follow it,
    each at least ``floor``. Returns (shares, probability best)."""
    names = list(arms)
    samples = np.empty((draws, len(names)))
    for j, a in enumerate(names):
        m = arms[a]
        if binary:
            samples[:, j] = rng.beta(1 + m.total, 1 + max(m.n - m.total, 0), draws)
        else:
            sd = math.sqrt(m.variance / m.n) if m.n > 1 else 1e6
            samples[:, j] = rng.normal(m.mean, sd, draws)
    best = np.argmax(direction * samples, axis=1)
    prob = {a: float(np.mean(best == j)) for j, a in enumerate(names)}
    free = max(1.0 - floor * len(names), 0.0)
    shares = {a: floor + free * prob[a] for a in names}
    total = sum(shares.values())
    return {a: s / total for a, s in shares.items()}, prob
