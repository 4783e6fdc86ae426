"""Live quality from joined labels, per model version: kept twice, cumulative from exact
sufficient statistics (a confusion matrix, sums, Welford moments — equal to scikit-learn's on
the same pairs) and over a rolling window of the last N labels, recomputed exactly from the
pairs the window holds. Only the cumulative ROC AUC is approximate: it is computed from
1,000-bin score histograms, so scores closer than 0.001 count as ties (the window's AUC is
exact). Pure, and JSON round-tripping like ``monitoring.quality.stats``.

Why not ``river.metrics`` objects as the state: their state does not serialize to JSON (a pickle
would tie snapshots to one River release), and ``river.metrics.ROCAUC`` approximates with 10
thresholds by default. The formulas are the same ones River and scikit-learn use.
"""

from __future__ import annotations

import math
from collections import deque
from typing import Any

import numpy as np

AUC_BINS = 1000
EPS = float(np.finfo(np.float64).eps)


class Moments:
    """Count, mean, variance (Welford), min and max of a stream."""

    def __init__(self, n: int = 0, mean: float = 0.0, m2: float = 0.0) -> None:
        self.n, self.mean, self.m2 = n, mean, m2

    def add(self, x: float) -> None:
        self.n += 1
        d = x - self.mean
        self.mean += d / self.n
        self.m2 += d * (x - self.mean)

    @property
    def variance(self) -> float:
        return self.m2 / self.n if self.n else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {"n": self.n, "mean": self.mean, "m2": self.m2}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Moments:
        return cls(d["n"], d["mean"], d["m2"])


# --------------------------------------------------------------------------- quality


def _prf(confusion: np.ndarray, positive: int | None) -> tuple[float, float, float]:
    """Precision, recall, F1: of the positive class (binary) or macro-averaged (multiclass);
    0.0 where undefined, as scikit-learn's ``zero_division=0``."""
    tp = np.diag(confusion).astype(float)
    predicted = confusion.sum(axis=0).astype(float)
    actual = confusion.sum(axis=1).astype(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(predicted > 0, tp / predicted, 0.0)
        recall = np.where(actual > 0, tp / actual, 0.0)
        denom = precision + recall
        f1 = np.where(denom > 0, 2 * precision * recall / denom, 0.0)
    if positive is not None:
        return float(precision[positive]), float(recall[positive]), float(f1[positive])
    return float(precision.mean()), float(recall.mean()), float(f1.mean())


def exact_auc(is_positive: np.ndarray, scores: np.ndarray) -> float | None:
    """ROC AUC by the Mann–Whitney rank statistic, ties counted half (= scikit-learn's)."""
    n_pos = int(is_positive.sum())
    n_neg = len(is_positive) - n_pos
    if n_pos == 0 or n_neg == 0:
        return None
    _, inverse, counts = np.unique(scores, return_inverse=True, return_counts=True)
    starts = np.cumsum(counts) - counts
    ranks = (starts + (counts + 1) / 2.0)[inverse]
    return float((ranks[is_positive].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def histogram_auc(pos_hist: np.ndarray, neg_hist: np.ndarray) -> float | None:
    n_pos, n_neg = pos_hist.sum(), neg_hist.sum()
    if n_pos == 0 or n_neg == 0:
        return None
    below = np.cumsum(neg_hist) - neg_hist  # negatives in lower bins
    wins = (pos_hist * below).sum() + 0.5 * (pos_hist * neg_hist).sum()
    return float(wins / (n_pos * n_neg))


def _bin(p: float) -> int:
    return min(AUC_BINS - 1, max(0, int(p * AUC_BINS)))


class ClassifierQuality:
    """Accuracy, precision, recall, F1, log loss and ROC AUC of one version's labelled answers.

    Binary: precision/recall/F1/AUC of the positive class, ``class_labels[1]`` (scikit-learn's
    convention: the greater label index). Multiclass: macro averages and one-vs-rest macro AUC.
    """

    def __init__(self, k: int, window: int) -> None:
        self.k = k
        self.window_size = window
        self.confusion = np.zeros((k, k), dtype=np.int64)
        self.log_loss_sum = 0.0
        self.hist = np.zeros((k, 2, AUC_BINS), dtype=np.int64)  # class, (neg, pos), bin
        self.window: deque[tuple[int, int, list[float]]] = deque(maxlen=window)

    @property
    def n(self) -> int:
        return int(self.confusion.sum())

    @staticmethod
    def _log_loss(truth: int, probs: list[float]) -> float:
        total = sum(probs) or 1.0
        p = min(max(probs[truth] / total, EPS), 1 - EPS)
        return -math.log(p)

    def add(self, truth: int, predicted: int, probs: list[float]) -> None:
        self.confusion[truth, predicted] += 1
        self.log_loss_sum += self._log_loss(truth, probs)
        for c in range(self.k) if self.k > 2 else (1,):
            self.hist[c, int(truth == c), _bin(probs[c])] += 1
        self.window.append((truth, predicted, list(probs)))

    def _positive(self) -> int | None:
        return 1 if self.k == 2 else None

    def cumulative(self) -> dict[str, Any]:
        n = self.n
        if n == 0:
            return {"labels": 0}
        precision, recall, f1 = _prf(self.confusion, self._positive())
        if self.k == 2:
            auc = histogram_auc(self.hist[1, 1], self.hist[1, 0])
        else:
            aucs = [histogram_auc(self.hist[c, 1], self.hist[c, 0]) for c in range(self.k)]
            auc = None if any(a is None for a in aucs) else float(np.mean(aucs))  # type: ignore[arg-type]
        return {"labels": n, "accuracy": float(np.trace(self.confusion) / n),
                "precision": precision, "recall": recall, "f1": f1,
                "log_loss": self.log_loss_sum / n, "roc_auc": auc}

    def windowed(self) -> dict[str, Any]:
        if not self.window:
            return {"labels": 0, "size": self.window_size}
        truth = np.array([w[0] for w in self.window])
        pred = np.array([w[1] for w in self.window])
        probs = np.array([w[2] for w in self.window], dtype=np.float64)
        confusion = np.zeros((self.k, self.k), dtype=np.int64)
        np.add.at(confusion, (truth, pred), 1)
        precision, recall, f1 = _prf(confusion, self._positive())
        norm = probs / np.where(probs.sum(axis=1, keepdims=True) > 0,
                                probs.sum(axis=1, keepdims=True), 1.0)
        p_true = np.clip(norm[np.arange(len(truth)), truth], EPS, 1 - EPS)
        if self.k == 2:
            auc = exact_auc(truth == 1, probs[:, 1])
        else:
            aucs = [exact_auc(truth == c, probs[:, c]) for c in range(self.k)]
            auc = None if any(a is None for a in aucs) else float(np.mean(aucs))  # type: ignore[arg-type]
        return {"labels": len(truth), "size": self.window_size,
                "accuracy": float((truth == pred).mean()), "precision": precision,
                "recall": recall, "f1": f1, "log_loss": float(-np.log(p_true).mean()),
                "roc_auc": auc}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "classifier", "k": self.k, "window_size": self.window_size,
                "confusion": self.confusion.tolist(), "log_loss_sum": self.log_loss_sum,
                "hist": {f"{c}:{s}": {str(int(i)): int(v) for i, v in
                                      zip(np.nonzero(self.hist[c, s])[0],
                                          self.hist[c, s][np.nonzero(self.hist[c, s])[0]],
                                          strict=True)}
                         for c in range(self.k) for s in (0, 1)},
                "window": list(self.window)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ClassifierQuality:
        q = cls(d["k"], d["window_size"])
        q.confusion = np.array(d["confusion"], dtype=np.int64)
        q.log_loss_sum = d["log_loss_sum"]
        for key, bins in d["hist"].items():
            c, s = (int(x) for x in key.split(":"))
            for i, v in bins.items():
                q.hist[c, s, int(i)] = v
        q.window.extend((int(t), int(p), list(pr)) for t, p, pr in d["window"])
        return q


class RegressorQuality:
    """MAE, RMSE and R² of one version's labelled answers."""

    def __init__(self, window: int) -> None:
        self.window_size = window
        self.n = 0
        self.abs_sum = 0.0
        self.sq_sum = 0.0
        self.truth = Moments()
        self.window: deque[tuple[float, float]] = deque(maxlen=window)

    def add(self, truth: float, predicted: float) -> None:
        err = truth - predicted
        self.n += 1
        self.abs_sum += abs(err)
        self.sq_sum += err * err
        self.truth.add(truth)
        self.window.append((truth, predicted))

    @staticmethod
    def _r2(sse: float, sst: float) -> float:
        if sst <= 0:
            return 1.0 if sse == 0 else 0.0
        return 1.0 - sse / sst

    def cumulative(self) -> dict[str, Any]:
        if self.n == 0:
            return {"labels": 0}
        return {"labels": self.n, "mae": self.abs_sum / self.n,
                "rmse": math.sqrt(self.sq_sum / self.n),
                "r2": self._r2(self.sq_sum, self.truth.m2)}

    def windowed(self) -> dict[str, Any]:
        if not self.window:
            return {"labels": 0, "size": self.window_size}
        arr = np.array(self.window, dtype=np.float64)
        err = arr[:, 0] - arr[:, 1]
        sst = float(((arr[:, 0] - arr[:, 0].mean()) ** 2).sum())
        return {"labels": len(arr), "size": self.window_size, "mae": float(np.abs(err).mean()),
                "rmse": float(np.sqrt((err ** 2).mean())),
                "r2": self._r2(float((err ** 2).sum()), sst)}

    def to_dict(self) -> dict[str, Any]:
        return {"kind": "regressor", "window_size": self.window_size, "n": self.n,
                "abs_sum": self.abs_sum, "sq_sum": self.sq_sum, "truth": self.truth.to_dict(),
                "window": list(self.window)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> RegressorQuality:
        q = cls(d["window_size"])
        q.n, q.abs_sum, q.sq_sum = d["n"], d["abs_sum"], d["sq_sum"]
        q.truth = Moments.from_dict(d["truth"])
        q.window.extend((float(t), float(p)) for t, p in d["window"])
        return q


# --------------------------------------------------------------------------- per version
