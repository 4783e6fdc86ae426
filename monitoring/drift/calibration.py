"""Closed-form CUSUM thresholds for a false-alarm budget (pure math; used by
``monitoring.drift.signals``): Siegmund's approximation for Gaussian increments, the same with the
Cramér root for χ²₁ increments, Wald's root θ = 1 for likelihood ratios, and the one-standard-
error guard on reference rates."""

from __future__ import annotations

import math
from typing import Any


def _solve(f: Any, lo: float, hi: float, target: float) -> float:
    """Bisection for increasing f: the x in [lo, hi] with f(x) = target."""
    for _ in range(200):
        mid = (lo + hi) / 2
        if f(mid) < target:
            lo = mid
        else:
            hi = mid
    return hi


def gaussian_threshold(k: float, arl0: float) -> float:
    """h for a one-sided CUSUM on N(0, 1) increments with allowance k whose in-control run
    length is ``arl0`` (Siegmund: ARL0 = (e^{2kh'} − 2kh' − 1) / 2k², h' = h + 1.166)."""
    def arl(h: float) -> float:
        x = 2 * k * (h + 1.166)
        return (math.exp(min(x, 700)) - x - 1) / (2 * k * k)
    return _solve(arl, 0.0, 1000.0, arl0)


def gaussian_delay(k: float, h: float, shift: float) -> float:
    """Siegmund's expected delay for a mean shift ``shift`` (> k) in σ units."""
    d = shift - k
    x = 2 * d * (h + 1.166)
    return (math.exp(-x) + x - 1) / (2 * d * d)


def chi2_threshold(k: float, arl0: float, upper: bool) -> float:
    """h for a one-sided CUSUM on ±(z² − 1) − k with z ~ N(0, 1): Siegmund's form with the
    Cramér root θ of E[e^{θX}] = 1 and Siegmund's overshoot scaled to the increments' σ = √2."""
    if upper:  # X = z² − 1 − k:  (1 − 2θ)^{-1/2} e^{−θ(1 + k)} = 1
        def g(t: float) -> float:
            return -0.5 * math.log(1 - 2 * t) - t * (1 + k)
        theta = _root(g, 0.5)
    else:  # X = 1 − z² − k:  (1 + 2θ)^{-1/2} e^{θ(1 − k)} = 1
        def g(t: float) -> float:
            return -0.5 * math.log(1 + 2 * t) + t * (1 - k)
        theta = _root(g, 50.0)
    over = 0.583 * math.sqrt(2)

    def arl(h: float) -> float:
        x = theta * (h + over)
        return (math.exp(min(x, 700)) - x - 1) / (theta * k)
    return _solve(arl, 0.0, 1000.0, arl0)


def _root(g: Any, hi: float) -> float:
    """The positive root of g (g < 0 just above 0, g > 0 near ``hi``)."""
    lo = 1e-9
    hi = hi - 1e-12
    for _ in range(200):
        mid = (lo + hi) / 2
        if g(mid) < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


def llr_threshold(arl0: float, kl0: float = 1.0) -> float:
    """h for a likelihood-ratio CUSUM. Its increments have Wald's root θ = 1 and mean −KL(p0‖p1)
    in control, so Siegmund's form gives ARL0 ≈ e^h / KL(p0‖p1): h = ln(ARL0 · KL)."""
    return max(1.0, math.log(max(arl0 * kl0, 1.0)))


GUARD_SE = 1.0


def guarded(p0: float, n: int, up: bool) -> float:
    """The in-control rate a one-sided Bernoulli detector assumes: the reference estimate moved
    one standard error towards the alternative, so that the reference's own sampling error
    does not become false alarms (unguarded, 500 warm-up labels made 30× the budget)."""
    se = math.sqrt(max(p0 * (1 - p0), 1e-6) / max(n, 1))
    return float(min(max(p0 + (GUARD_SE * se if up else -GUARD_SE * se), 1e-4), 1 - 1e-4))


def bernoulli_kl(p: float, q: float) -> float:
    return p * math.log(p / q) + (1 - p) * math.log((1 - p) / (1 - q))


def bernoulli_llr(p0: float, p1: float) -> tuple[float, float]:
    """The log-likelihood-ratio increments (on a hit, on a miss) for p0 → p1."""
    return math.log(p1 / p0), math.log((1 - p1) / (1 - p0))
