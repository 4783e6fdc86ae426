"""The joint signal, ``input_joint``: a change in how numeric features move together (a
correlation that flips, rows of two sources mispaired, a subpopulation moving in several
features at once) that each feature's own detectors cannot see, as its marginals stay put.

Each row's normal scores z (``NormalScores``) get one score of how unusual the row is as a
whole: the Mahalanobis distance D² = zᵀR⁻¹z against the reference correlation R of the
normal scores (χ²_d in control for a Gaussian copula), or a River anomaly scorer
(``river.HalfSpaceTrees``, ``river.LODA``) fitted on the reference rows. That score is mapped
to a normal score against the reference rows' own scores, computed out of sample (fit on
one half, score the other, both ways) so that live rows do not look more unusual than the
reference merely for being new, then watched by upper CUSUMs on its mean and its variance.

The alarm names the feature pairs whose correlation moved most: the correlation of the live
rows since the CUSUM last stood at zero (Page's estimate of the change point; at least
``MIN_ROWS``) against the reference's. Pure: numpy in, numbers out.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from monitoring.drift.base import DriftAlarm
from monitoring.drift.calibration import chi2_threshold, gaussian_threshold, llr_threshold
from monitoring.drift.detectors import CusumBank, CusumGroup, NormalScores

METHODS = ("mahalanobis", "river.HalfSpaceTrees", "river.LODA")
MEAN_KS = (0.25, 0.5, 1.0)  # upper CUSUMs on the row score's normal score
SCALE_K = 0.6  # and one on its square: a heavier tail at an unchanged mean
MIXTURES = ((0.1, 2.0), (0.1, 3.0))  # (share of rows, shift of their score)
TAIL = 6.0  # the largest normal score a row may get
COLUMNS = len(MEAN_KS) + 1 + len(MIXTURES)
MIN_ROWS = 50  # rows behind a pair's live correlation, at least
TOP_PAIRS = 5
_ERF = np.frompyfunc(math.erf, 1, 1)


class Mahalanobis:
    """D² of normal scores against their reference correlation, shrunk towards the identity
    by d/4n so that a short reference still inverts."""

    def __init__(self, z: np.ndarray) -> None:
        n, d = z.shape
        corr = np.atleast_2d(np.corrcoef(z, rowvar=False)) if n > 1 else np.eye(d)
        corr = np.nan_to_num(corr)
        shrink = min(0.5, d / (4 * max(n, 1))) + 1e-3
        corr = (1 - shrink) * corr + shrink * np.eye(d)
        self.whiten = np.ascontiguousarray(np.linalg.inv(np.linalg.cholesky(corr)).T)

    def score(self, z: np.ndarray) -> np.ndarray:
        # einsum, not BLAS: a 30 × 30 product gains nothing from BLAS's threads, and in one
        # profile on the loaded shared machine the BLAS product took 12 µs a row (einsum: 0.4)
        w = np.einsum("ij,jk->ik", z, self.whiten)
        return np.einsum("ij,ij->i", w, w)


class RiverScorer:
    """A River anomaly scorer learnt on the reference rows' normal scores (as Φ(z) in [0, 1])
    and frozen: live rows are scored, never learnt, so a drift cannot teach it away."""

    def __init__(self, z: np.ndarray, method: str, seed: int = 0) -> None:
        from river import anomaly

        d = z.shape[1]
        if method == "river.HalfSpaceTrees":
            self.model: Any = anomaly.HalfSpaceTrees(
                n_trees=10, height=8, window_size=min(250, len(z)),
                limits={j: (0.0, 1.0) for j in range(d)}, seed=seed)
        else:
            self.model = anomaly.LODA(seed=seed)
        for x in self._dicts(z):
            self.model.learn_one(x)

    @staticmethod
    def _dicts(z: np.ndarray) -> list[dict[int, float]]:
        u = 0.5 * (1.0 + np.asarray(_ERF(z / math.sqrt(2.0)), dtype=np.float64))  # Φ(z)
        return [dict(enumerate(row)) for row in u.tolist()]

    def score(self, z: np.ndarray) -> np.ndarray:
        return np.array([self.model.score_one(x) for x in self._dicts(z)], dtype=np.float64)


def scorer(z: np.ndarray, method: str) -> Mahalanobis | RiverScorer:
    if method == "mahalanobis":
        return Mahalanobis(z)
    if method in METHODS:
        return RiverScorer(z, method)
    raise ValueError(f"unknown joint detector {method!r}")


class JointScores:
    """Rows' normal scores → one normal score a row of how unusual the row is as a whole."""

    def __init__(self, z_ref: np.ndarray, method: str = "mahalanobis", seed: int = 0) -> None:
        n = len(z_ref)
        order = np.random.default_rng(seed).permutation(n)
        a, b = order[:n // 2], order[n // 2:]
        held_out = np.concatenate([scorer(z_ref[a], method).score(z_ref[b]),
                                   scorer(z_ref[b], method).score(z_ref[a])])
        self.method = method
        self.scorer = scorer(z_ref, method)
        self.normal = NormalScores(held_out)
        # above the reference's largest score the normal score would stop at Φ⁻¹(1 − 1/2n)
        # (3.1 for 569 rows): go on log-linearly, as the scores' top decile does, up to TAIL
        q90, q99 = np.quantile(held_out, [0.9, 0.99])
        self.top = float(held_out.max())
        self.z_top = float(self.normal.transform(np.array([[self.top]]))[0, 0])
        self.tail = max(math.log(max(q99, 1e-12) / max(q90, 1e-12)) / (2.3263 - 1.2816), 1e-3) \
            if q90 > 0 else 0.0
        self.corr = np.nan_to_num(np.atleast_2d(np.corrcoef(z_ref, rowvar=False)))

    def transform(self, z: np.ndarray) -> np.ndarray:
        """(n, d) normal scores → (n, 1)."""
        raw = self.scorer.score(z)[:, None]
        y = self.normal.transform(raw)
        if self.tail > 0 and self.top > 0:
            over = raw > self.top
            if over.any():
                y[over] = np.minimum(self.z_top + np.log(raw[over] / self.top) / self.tail, TAIL)
        return y

    def moved_pairs(self, z: np.ndarray, names: list[str]) -> list[dict[str, Any]]:
        """The feature pairs whose correlation in ``z`` (live rows' normal scores) is furthest
        from the reference's, most moved first."""
        if len(z) < 3 or z.shape[1] < 2:
            return []
        with np.errstate(invalid="ignore", divide="ignore"):
            live = np.nan_to_num(np.atleast_2d(np.corrcoef(z, rowvar=False)))
        moved = np.abs(live - self.corr)
        i, j = np.triu_indices(len(names), 1)
        # ranked on Fisher's z, whose sampling error is the same at every correlation: a
        # strong correlation that weakens stands out of a window's noise as much as a weak
        # one that flips
        fisher = np.abs(np.arctanh(np.clip(live, -0.999, 0.999))
                        - np.arctanh(np.clip(self.corr, -0.999, 0.999)))
        top = np.argsort(-fisher[i, j], kind="stable")[:TOP_PAIRS]
        return [{"feature": f"{names[i[t]]}~{names[j[t]]}", "pair": [names[i[t]], names[j[t]]],
                 "corr_reference": round(float(self.corr[i[t], j[t]]), 4),
                 "corr_live": round(float(live[i[t], j[t]]), 4),
                 "shift": round(float(moved[i[t], j[t]]), 4)} for t in top.tolist()]


def change_start(y: np.ndarray, k: np.ndarray, s0: np.ndarray, column: int, row: int,
                 age: int) -> int:
    """Rows before ``row`` (of a batch) since the upper CUSUM ``column`` last stood at 0,
    Page's estimate of where a change began; ``age``: rows since then before the batch."""
    inc = y[:row + 1] - k[column]
    c = s0[column] + np.cumsum(inc)
    floor = np.minimum.accumulate(np.minimum(c, 0.0))
    zeros = np.nonzero(c - floor <= 0)[0]
    return int(row - zeros[-1]) if len(zeros) else int(row + 1 + age)


def mixture_llr(y: np.ndarray, share: float, shift: float) -> np.ndarray:
    """Log-likelihood ratio of N(0, 1) against a ``share`` of rows shifted by ``shift``:
    the increment that sees a few rows turn very unusual (a subpopulation, mispaired rows)
    much sooner than a CUSUM on the mean does."""
    return np.log1p(share * np.expm1(shift * y - shift * shift / 2))


def mixture_kl(share: float, shift: float) -> float:
    """KL(N(0, 1) ‖ the mixture), by quadrature: sets the LLR CUSUM's threshold."""
    y = np.linspace(-10, 10, 20_001)
    w = np.exp(-y * y / 2) / math.sqrt(2 * math.pi) * (y[1] - y[0])
    return float(-(w * mixture_llr(y, share, shift)).sum())


class JointSignal:
    """``input_joint`` of a version: its row scores, its upper CUSUMs on the row score's
    normal score (its mean; its square, a heavier tail; mixtures, a share of rows turning
    unusual) and the pairs its last alarm named."""

    def __init__(self, z_ref: np.ndarray, names: list[str], method: str, arl: float) -> None:
        """``arl``: the signal's in-control run length, split evenly over its detectors."""
        self.scores = JointScores(z_ref, method)
        self.names = names
        cols = COLUMNS
        hs = [*[gaussian_threshold(k, arl * cols) for k in MEAN_KS],
              chi2_threshold(SCALE_K, arl * cols, True),
              *[llr_threshold(arl * cols, mixture_kl(e, m)) for e, m in MIXTURES]]
        self.group = CusumGroup(
            "input_joint", CusumBank(np.array([*MEAN_KS, SCALE_K, *[0.0] * len(MIXTURES)]),
                                     np.array(hs)),
            ["joint"] * cols,
            [f"joint_mean_up@{k:g}" for k in MEAN_KS] + [f"joint_scale_up@{SCALE_K:g}"]
            + [f"joint_mixture@{e:g}x{m:g}" for e, m in MIXTURES],
            src=np.arange(-len(MEAN_KS) + 1, 1 + len(MIXTURES) + 1).clip(0),
            sign=np.ones(cols))
        self.pairs: list[dict[str, Any]] = []
        self._age = 0  # rows since the CUSUMs last all stood at 0, before this batch

    def update(self, z: np.ndarray, base: int, run: Callable[[np.ndarray], list[DriftAlarm]],
               recent: Callable[[int], np.ndarray]) -> list[DriftAlarm]:
        """A batch's normal scores (its first row the ``base``-th seen). ``run``: the
        version's alarm maker on this group's series; ``recent(n)``: the last n live rows'
        normal scores (this batch included)."""
        y = self.scores.transform(z)
        y = np.concatenate([y, y * y - 1.0, *[mixture_llr(y, e, m) for e, m in MIXTURES]],
                           axis=1)
        bank = self.group.bank
        s0 = bank.s.copy()
        alarms = run(y)
        if alarms:
            t = alarms[0].rows - base - 1  # the alarm's row in this batch
            col = self.group.label.index(alarms[0].features[0]["detector"])
            assert self.group.src is not None
            back = change_start(y[:, self.group.src[col]], bank.k, s0, col, t, self._age)
            live = recent(max(len(z) - t + back, MIN_ROWS))
            self.pairs = self.scores.moved_pairs(live, self.names)
            if self.pairs:
                alarms[0].features = [{**p, "ratio": p["shift"]} for p in self.pairs]
                alarms[0].features[0]["detector"] = self.group.label[col]
        self._age = self._age + len(z) if bank.s.max() > 0 else 0
        return alarms
