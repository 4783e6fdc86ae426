"""The mixture sequential probability ratio test (mSPRT) for a difference of two means, with
always-valid p-values and confidence sequences (pure).

Source: R. Johari, P. Koomen, L. Pekelis and D. Walsh, "Peeking at A/B Tests: Why it matters,
and what to do about it", KDD 2017; and R. Johari, P. Koomen, L. Pekelis and D. Walsh, "Always
Valid Inference: Continuous Monitoring of A/B Tests", Operations Research 70(3), 2022.

With the arms' means ``m_c``, ``m_t``, their variances and counts, the estimate of the
difference is ``θ = m_t - m_c`` with variance ``V = s_c²/n_c + s_t²/n_t``. Mixing the
likelihood ratio of ``θ`` against 0 over a normal prior ``N(0, τ²)`` gives, in closed form::

    Λ = sqrt(V / (V + τ²)) · exp(θ² τ² / (2 V (V + τ²)))

``Λ`` is a martingale under no difference, so by Ville's inequality ``P(sup Λ ≥ 1/α) ≤ α``:
rejecting the first time ``Λ ≥ 1/α`` keeps the false-positive rate at ``α`` however often the
test is looked at. ``p = min over time of 1/Λ`` is the always-valid p-value, and the
``θ`` with ``Λ < 1/α`` form the confidence sequence ``θ ± sqrt(V (V+τ²)/τ² · (2 log(1/α) +
log((V+τ²)/V)))``. Vigil sets ``τ`` to the experiment's ``min_effect``. The variances are the
arms' sample variances (the normal approximation the papers use for large samples); binary
KPIs have ``p(1-p)``, which their sums of squares give as well.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

VARIANCE_FLOOR = 1e-12


@dataclass(frozen=True)
class Moments:
    """An arm's outcomes as sufficient statistics: count, sum, sum of squares."""

    n: float = 0.0
    total: float = 0.0
    total_sq: float = 0.0

    @property
    def mean(self) -> float:
        return self.total / self.n if self.n > 0 else 0.0

    @property
    def variance(self) -> float:
        if self.n <= 0:
            return 0.0
        return max(self.total_sq / self.n - self.mean ** 2, 0.0)

    def minus(self, base: Moments) -> Moments:
        """What was added since ``base`` (a snapshot taken at the experiment's start)."""
        return Moments(self.n - base.n, self.total - base.total, self.total_sq - base.total_sq)


def log_lr(theta: float, v: float, tau: float) -> float:
    """log Λ: the mixture likelihood ratio of the estimate ``theta`` (variance ``v``)."""
    v = max(v, VARIANCE_FLOOR)
    t2 = tau * tau
    return 0.5 * math.log(v / (v + t2)) + theta * theta * t2 / (2.0 * v * (v + t2))


def half_width(v: float, tau: float, alpha: float) -> float:
    """Half the width of the always-valid (1 - alpha) confidence sequence at variance ``v``."""
    v = max(v, VARIANCE_FLOOR)
    t2 = tau * tau
    return math.sqrt(v * (v + t2) / t2 * (2.0 * math.log(1.0 / alpha) + math.log((v + t2) / v)))


@dataclass(frozen=True)
class Comparison:
    """An arm against the control: the difference of means, its confidence sequence and the
    p-value at this look (take the running minimum over looks for the always-valid one)."""

    lift: float
    ci: tuple[float, float]
    p_value: float


def compare(control: Moments, arm: Moments, tau: float, alpha: float) -> Comparison:
    """``arm`` minus ``control``.

    >>> c = compare(Moments(5000, 500, 500), Moments(5000, 650, 650), tau=0.02, alpha=0.05)
    >>> round(c.lift, 3), c.p_value < 0.05, c.ci[0] > 0
    (0.03, True, True)
    """
    if control.n <= 0 or arm.n <= 0:
        return Comparison(0.0, (-math.inf, math.inf), 1.0)
    theta = arm.mean - control.mean
    v = control.variance / control.n + arm.variance / arm.n
    p = min(1.0, math.exp(min(-log_lr(theta, v, tau), 0.0)))
    h = half_width(v, tau, alpha)
    return Comparison(theta, (theta - h, theta + h), p)
