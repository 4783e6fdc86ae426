"""Seeded simulations of experiments on the pure decision code (``monitoring.experiments``):
A/A false positives under a look every tick, power and samples to a decision on a true lift,
guardrail breaches, and the bandit's regret against a fixed split. ``python -m
load_tests.experiments_sim`` writes ``load_tests/experiments_results.md``; the unit tests run
the same functions with fewer runs."""

from __future__ import annotations

import argparse
import math
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from load_tests.experiments_monitor import aa_through_monitor
from monitoring.experiments.decision import Design, Guardrail, breached, evaluate, thompson_shares
from monitoring.experiments.horizon import fixed_horizon_samples_per_arm, max_samples_per_arm
from monitoring.experiments.msprt import Moments

LOOK_EVERY = 50  # outcomes per arm between looks (a tick's worth at ~100 req/s)


@dataclass(frozen=True)
class Run:
    reason: str
    winner: str | None
    n: int  # outcomes per arm at the decision


def design(p: float, min_effect: float = 0.02, alpha: float = 0.05, power: float = 0.8,
           arms: int = 2) -> Design:
    alpha_each = alpha / (arms - 1)
    q = p + min_effect
    horizon = max_samples_per_arm(alpha_each, power, p * (1 - p), q * (1 - q), min_effect)
    names = tuple(f"v{i + 1}" for i in range(arms))
    return Design("v1", names, min_effect, alpha, horizon)


def run_fixed(d: Design, rates: dict[str, float], rng: np.random.Generator,
              errors: dict[str, float] | None = None, guard: Guardrail | None = None,
              to_the_end: bool = False) -> Run:
    """One experiment, looked at every ``LOOK_EVERY`` outcomes per arm up to the truncation;
    ``to_the_end``: futility never stops it early (only a winner does)."""
    n_max = d.max_samples_per_arm
    looks = np.arange(LOOK_EVERY, n_max + LOOK_EVERY, LOOK_EVERY).clip(max=n_max)
    sums = {a: np.cumsum(rng.random(n_max) < rates[a])[looks - 1] for a in d.arms}
    errs = ({a: np.cumsum(rng.random(n_max) < errors[a])[looks - 1] for a in d.arms}
            if errors else None)
    for i, n in enumerate(looks):
        if guard is not None and errs is not None:
            c = Moments(n, errs[d.control][i], errs[d.control][i])
            if any(breached(guard, c, Moments(n, errs[a][i], errs[a][i]), d.alpha)
                   for a in d.treatments):
                return Run("guardrail", None, int(n))
        v = evaluate(d, {a: Moments(n, float(sums[a][i]), float(sums[a][i]))
                         for a in d.arms})
        if v.winner is not None and guard is not None and errs is not None and breached(
                guard, Moments(n, errs[d.control][i], errs[d.control][i]),
                Moments(n, errs[v.winner][i], errs[v.winner][i]), d.alpha, suspected=True):
            continue  # no winner while a guardrail is suspected
        if v.reason is not None and not (to_the_end and v.reason == "futility"):
            return Run(v.reason, v.winner, int(n))
    return Run("futility", None, int(n_max))


def run_bandit(rates: dict[str, float], total: int, rng: np.random.Generator,
               floor: float = 0.05, batch: int = 100) -> float:
    """Thompson sampling over ``total`` outcomes, reallocated every ``batch``: its regret
    (expected conversions lost against always serving the best arm)."""
    names, best = list(rates), max(rates.values())
    counts = {a: Moments() for a in names}
    shares = {a: 1 / len(names) for a in names}
    regret = 0.0
    for _ in range(total // batch):
        alloc = rng.multinomial(batch, [shares[a] for a in names])
        for a, k in zip(names, alloc, strict=True):
            s = float((rng.random(k) < rates[a]).sum())
            m = counts[a]
            counts[a] = Moments(m.n + k, m.total + s, m.total_sq + s)
            regret += k * (best - rates[a])
        if min(m.n for m in counts.values()) >= 1:
            shares, _ = thompson_shares(counts, True, 1, floor, rng, draws=1000)
    return regret


def aa(runs: int, seed: int, p: float = 0.1, to_the_end: bool = True, arms: int = 2
       ) -> tuple[float, float, list[Run]]:
    """A/A experiments, each looked at to ``max_samples_per_arm`` (futility ignored): the
    share that names a winner, and its bound's standard error at alpha."""
    d = design(p, arms=arms)
    rng = np.random.default_rng(seed)
    out = [run_fixed(d, dict.fromkeys(d.arms, p), rng, to_the_end=to_the_end)
           for _ in range(runs)]
    share = sum(r.winner is not None for r in out) / runs
    return share, math.sqrt(d.alpha * (1 - d.alpha) / runs), out


def lift(runs: int, seed: int, p: float = 0.1, q: float = 0.12) -> list[Run]:
    d = design(p)
    rng = np.random.default_rng(seed)
    return [run_fixed(d, {"v1": p, "v2": q}, rng) for _ in range(runs)]


def guardrail(runs: int, seed: int) -> list[Run]:
    d = design(0.1)
    rng = np.random.default_rng(seed)
    g = Guardrail(metric="error_rate", max_increase=0.01)
    return [run_fixed(d, {"v1": 0.1, "v2": 0.12}, rng, {"v1": 0.02, "v2": 0.05}, g)
            for _ in range(runs)]


def report(aa_runs: int, lift_runs: int, guard_runs: int, bandit_runs: int,
           monitor_runs: int) -> str:
    started = time.perf_counter()
    d = design(0.1)
    fixed_n = fixed_horizon_samples_per_arm(0.05, 0.8, 0.09, 0.12 * 0.88, 0.02)
    share, se, _ = aa(aa_runs, 1)
    early_share, _, aa_out = aa(aa_runs, 5, to_the_end=False)
    three, se3, _ = aa(aa_runs // 4, 6, arms=3)
    lifted = lift(lift_runs, 2)
    detected = [r for r in lifted if r.reason == "significant" and r.winner == "v2"]
    guards = guardrail(guard_runs, 3)
    rng = np.random.default_rng(4)
    total = 2 * d.max_samples_per_arm
    bandit = [run_bandit({"v1": 0.1, "v2": 0.12}, total, rng) for _ in range(bandit_runs)]
    fixed_regret = total / 2 * 0.02
    real = aa_through_monitor(monitor_runs, 8)
    real_winners = sum(r["decision"]["winner"] is not None for r in real)
    lines = [
        "# Experiments: seeded simulations of the decision code",
        "",
        "`python -m load_tests.experiments_sim` (seeds 1-4), on the pure code of "
        "`monitoring/experiments/` (mSPRT, tau = min_effect = 0.02, alpha 0.05, power 0.8, "
        f"a look every {LOOK_EVERY} outcomes per arm, {MIN_SAMPLES_NOTE}).",
        "",
        "| scenario | runs | result |",
        "|---|---|---|",
        f"| sizing, 10% baseline | | max_samples_per_arm {d.max_samples_per_arm}, fixed "
        f"horizon {fixed_n} per arm |",
        f"| A/A, 10% both, looked at every tick to max_samples_per_arm (futility ignored) "
        f"| {aa_runs} | winner in {share:.2%} (bound alpha + 2 SE = {0.05 + 2 * se:.2%}) |",
        f"| A/A as deployed (futility stops) | {aa_runs} | winner in {early_share:.2%}; "
        f"futility {sum(r.reason == 'futility' for r in aa_out) / aa_runs:.1%}, median stop "
        f"{statistics.median(r.n for r in aa_out):.0f} per arm |",
        f"| A/A/A, three arms at alpha/2 each (Bonferroni), to max_samples_per_arm "
        f"{design(0.1, arms=3).max_samples_per_arm} | {aa_runs // 4} | a winner in "
        f"{three:.2%} (bound {0.05 + 2 * se3:.2%}) |",
        f"| 10% → 12% | {lift_runs} | v2 detected in {len(detected) / lift_runs:.1%} by "
        f"{d.max_samples_per_arm} per arm; median samples to a decision "
        f"{statistics.median(r.n for r in lifted):.0f} per arm (detected runs: "
        f"{statistics.median(r.n for r in detected):.0f}), fixed horizon {fixed_n}; wrong "
        f"winner {sum(r.winner == 'v1' for r in lifted)} |",
        f"| guardrail: v2 errors 5% vs 2% (max_increase 0.01), v2 converts 12% | "
        f"{guard_runs} | stopped on the guardrail in "
        f"{sum(r.reason == 'guardrail' for r in guards) / guard_runs:.1%}, median at "
        f"{statistics.median(r.n for r in guards):.0f} per arm; winner declared in "
        f"{sum(r.winner is not None for r in guards)} |",
        f"| bandit (Thompson, floor 5%) vs fixed 50/50, 10% vs 12%, {total} outcomes | "
        f"{bandit_runs} | mean regret {statistics.mean(bandit):.1f} conversions vs "
        f"{fixed_regret:.1f} for the fixed split |",
        f"| A/A through the real Monitor and store (30% both, min_effect 0.05, sized at "
        f"{real[0]['max_samples_per_arm'] if real else 0} per arm, a look every 250 per arm) | "
        f"{monitor_runs} | a winner in {real_winners}; futility in "
        f"{sum(r['decision']['reason'] == 'futility' for r in real)} |",
        "",
        f"Wall time {time.perf_counter() - started:.0f} s.",
        "",
    ]
    return "\n".join(lines)


MIN_SAMPLES_NOTE = "no look before 100 outcomes per arm"

if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--aa", type=int, default=2000)
    ap.add_argument("--lift", type=int, default=500)
    ap.add_argument("--guard", type=int, default=200)
    ap.add_argument("--bandit", type=int, default=100)
    ap.add_argument("--monitor", type=int, default=100)
    ap.add_argument("--out", default="load_tests/experiments_results.md")
    a = ap.parse_args()
    text = report(a.aa, a.lift, a.guard, a.bandit, a.monitor)
    Path(a.out).write_text(text)
    print(text)
