"""How many samples per arm an experiment needs (pure): the mSPRT's truncation
``max_samples_per_arm`` (where it reaches ``power`` at ``min_effect``) and, for comparison,
the fixed-horizon size of a two-sided z-test.

The mSPRT has no closed form for its power, so the truncation comes from a table computed
once by simulation and committed here (``load_tests/experiments_horizon.py``, seeded): in
units ``t = n δ² / σ̄²`` (``δ`` the minimum effect, ``σ̄²`` the mean of the two arms'
variances) the test with ``τ = δ`` is the same for every KPI, so ``TABLE[alpha][power]`` is
the ``t`` by which it rejects with probability ``power`` under an effect of exactly ``δ``,
looked at about every 0.05 units and stopped early for futility as ``decision`` does.
Nothing is simulated at start-up: between grid points the table is interpolated (linear in
log alpha and in power).
"""

from __future__ import annotations

import bisect
import math
from statistics import NormalDist

# alpha -> power -> t; None where the power is out of reach (futility stops take up to alpha)
TABLE: dict[float, dict[float, float | None]] = {
    0.0005: {0.5: 34.55, 0.6: 38.85, 0.7: 43.9, 0.8: 50.35, 0.85: 54.35, 0.9: 59.65, 0.95: 68.05},
    0.001: {0.5: 31.5, 0.6: 35.7, 0.7: 40.6, 0.8: 46.85, 0.85: 50.75, 0.9: 56.0, 0.95: 64.1},
    0.0025: {0.5: 27.7, 0.6: 31.75, 0.7: 36.2, 0.8: 42.1, 0.85: 45.95, 0.9: 50.95, 0.95: 58.95},
    0.005: {0.5: 24.75, 0.6: 28.55, 0.7: 32.95, 0.8: 38.65, 0.85: 42.1, 0.9: 46.9, 0.95: 54.7},
    0.01: {0.5: 21.6, 0.6: 25.1, 0.7: 29.4, 0.8: 34.65, 0.85: 38.1, 0.9: 42.8, 0.95: 50.35},
    0.025: {0.5: 17.85, 0.6: 21.05, 0.7: 24.8, 0.8: 29.7, 0.85: 32.95, 0.9: 37.45, 0.95: 44.6},
    0.05: {0.5: 14.85, 0.6: 17.8, 0.7: 21.2, 0.8: 25.7, 0.85: 28.7, 0.9: 32.9, 0.95: 40.15},
    0.1: {0.5: 11.8, 0.6: 14.3, 0.7: 17.45, 0.8: 21.65, 0.85: 24.55, 0.9: 28.7, 0.95: 36.55},
    0.2: {0.5: 8.65, 0.6: 10.8, 0.7: 13.6, 0.8: 17.5, 0.85: 20.55, 0.9: 25.5, 0.95: None},
}


def _bracket(grid: list[float], x: float) -> tuple[int, int, float]:
    i = bisect.bisect_left(grid, x)
    if i < len(grid) and grid[i] == x:
        return i, i, 0.0
    lo, hi = i - 1, i
    return lo, hi, (x - grid[lo]) / (grid[hi] - grid[lo])


def normalized_horizon(alpha: float, power: float) -> float:
    """``t(alpha, power)`` from the table; ValueError outside it (alpha in [0.0005, 0.2],
    power in [0.5, 0.95], and not both high)."""
    alphas, powers = sorted(TABLE), sorted(next(iter(TABLE.values())))
    if not alphas[0] <= alpha <= alphas[-1]:
        raise ValueError(f"alpha per comparison {alpha:g} is outside [{alphas[0]}, "
                         f"{alphas[-1]}]")
    if not powers[0] <= power <= powers[-1]:
        raise ValueError(f"power {power:g} is outside [{powers[0]}, {powers[-1]}]")
    logs = [math.log(a) for a in alphas]
    a0, a1, wa = _bracket(logs, math.log(alpha))
    p0, p1, wp = _bracket(powers, power)
    corners = [TABLE[alphas[a]][powers[p]] for a in (a0, a1) for p in (p0, p1)]
    if any(c is None for c in corners):
        raise ValueError(f"power {power:g} is out of reach at alpha {alpha:g}")
    c00, c01, c10, c11 = (float(c) for c in corners)  # type: ignore[arg-type]
    return ((1 - wa) * ((1 - wp) * c00 + wp * c01) + wa * ((1 - wp) * c10 + wp * c11))


def max_samples_per_arm(alpha: float, power: float, var_control: float, var_arm: float,
                        min_effect: float) -> int:
    """The mSPRT's truncation per arm. ``alpha`` is per comparison (after Bonferroni)."""
    mean_var = (var_control + var_arm) / 2
    return math.ceil(normalized_horizon(alpha, power) * mean_var / min_effect ** 2)


def fixed_horizon_samples_per_arm(alpha: float, power: float, var_control: float,
                                  var_arm: float, min_effect: float) -> int:
    """A two-sided z-test's size per arm, looked at once.

    >>> fixed_horizon_samples_per_arm(0.05, 0.8, 0.1 * 0.9, 0.12 * 0.88, 0.02)
    3839
    """
    z = NormalDist().inv_cdf(1 - alpha / 2) + NormalDist().inv_cdf(power)
    return math.ceil(z * z * (var_control + var_arm) / min_effect ** 2)
