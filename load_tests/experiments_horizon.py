"""Computes the mSPRT truncation table committed in ``monitoring/experiments/horizon.py``.

In units where the minimum effect and the mixing scale are 1 and ``t = n δ² / σ̄²`` (``n`` per
arm, ``σ̄²`` the arms' mean variance), the estimate after ``t`` is ``x(t)/t`` with
``x(t) = t + sqrt(2) W(t)`` under the minimum effect, and its variance ``2/t``: the test is
scale-free, so one table of ``t`` by (alpha, power) sizes every experiment. Each path is
looked at every ``DT`` (about a dozen samples per arm at 10% → 12%), stops at its first
rejection (significant) or when the confidence sequence excludes the minimum effect
(futility), as ``decision`` does; ``T(alpha, power)`` is the ``power`` quantile of the time to
a rejection. Seeded; run ``python -m load_tests.experiments_horizon`` and paste its output.
"""

from __future__ import annotations

import math

import numpy as np

ALPHAS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.2)
POWERS = (0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)
DT, T_MAX, PATHS, CHUNK, SEED = 0.05, 300.0, 40_000, 2_000, 20261205


def crossing_times(alpha: float, rng: np.random.Generator, paths: int) -> np.ndarray:
    steps = int(T_MAX / DT)
    t = DT * np.arange(1, steps + 1)
    v = 2.0 / t
    out = []
    for _ in range(paths // CHUNK):
        x = np.cumsum(DT + math.sqrt(2 * DT) * rng.standard_normal((CHUNK, steps)), axis=1)
        theta = x / t
        llr = 0.5 * np.log(v / (v + 1)) + theta ** 2 / (2 * v * (v + 1))
        hw = np.sqrt(v * (v + 1) * (2 * math.log(1 / alpha) + np.log((v + 1) / v)))
        reject = (llr >= math.log(1 / alpha)) & (theta > 0)
        futile = theta + hw < 1.0
        first_r = np.where(reject.any(axis=1), reject.argmax(axis=1), steps)
        first_f = np.where(futile.any(axis=1), futile.argmax(axis=1), steps)
        out.append(np.where(first_r < first_f, (first_r + 1) * DT, math.inf))
    return np.concatenate(out)


def table() -> dict[float, dict[float, float | None]]:
    rng = np.random.default_rng(SEED)
    result: dict[float, dict[float, float | None]] = {}
    for alpha in ALPHAS:
        times = np.sort(crossing_times(alpha, rng, PATHS))
        row: dict[float, float | None] = {}
        for power in POWERS:
            q = times[int(math.ceil(power * len(times))) - 1]
            row[power] = None if not math.isfinite(q) else round(float(q), 2)
        result[alpha] = row
    return result


if __name__ == "__main__":
    print("TABLE = {")
    for alpha, row in table().items():
        print(f"    {alpha}: {row},")
    print("}")
