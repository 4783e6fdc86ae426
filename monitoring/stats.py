"""Per model version statistics the Monitor keeps: traffic, latency, the distribution of
predictions, and quality from joined labels. Pure: plain values in, plain values out, and
every object round-trips through JSON (``to_dict`` / ``from_dict``) so the Monitor can commit
it with its checkpoint in one transaction.

Quality metrics are kept twice: cumulative, from exact sufficient statistics (a confusion
matrix, sums, Welford moments — equal to scikit-learn's on the same pairs), and over a rolling
window of the last N labels, recomputed exactly from the pairs the window holds. Only the
cumulative ROC AUC is approximate: it is computed from 1,000-bin score histograms, so scores
closer than 0.001 count as ties (the window's AUC is exact).

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


class Sketch:
    """A DDSketch: quantiles with 1% relative error in constant memory, mergeable, JSON-able.
    (Masson, Rim & Lee, VLDB 2019.)"""

    ALPHA = 0.01
    GAMMA = (1 + ALPHA) / (1 - ALPHA)
    LOG_GAMMA = math.log(GAMMA)
    MIN = 1e-9

    def __init__(self) -> None:
        self.pos: dict[int, int] = {}
        self.neg: dict[int, int] = {}
        self.zero = 0
        self.n = 0
        self.min = math.inf
        self.max = -math.inf

    def add(self, x: float) -> None:
        if x != x:  # NaN
            return
        self.n += 1
        if x < self.min:
            self.min = x
        if x > self.max:
            self.max = x
        if x > 0:
            if x <= self.MIN:
                self.zero += 1
                return
            store, a = self.pos, x
        else:
            if -x <= self.MIN:
                self.zero += 1
                return
            store, a = self.neg, -x
        key = math.ceil(math.log(a) / self.LOG_GAMMA)
        store[key] = store.get(key, 0) + 1

    def _value(self, key: int) -> float:
        return 2 * self.GAMMA ** key / (self.GAMMA + 1)

    def quantile(self, q: float) -> float | None:
        if self.n == 0:
            return None
        rank = q * (self.n - 1)
        seen = 0
        for key in sorted(self.neg, reverse=True):
            seen += self.neg[key]
            if seen > rank:
                return max(self.min, -self._value(key))
        seen += self.zero
        if seen > rank:
            return 0.0
        for key in sorted(self.pos):
            seen += self.pos[key]
            if seen > rank:
                return min(self.max, self._value(key))
        return self.max

    def to_dict(self) -> dict[str, Any]:
        return {"pos": {str(k): v for k, v in self.pos.items()},
                "neg": {str(k): v for k, v in self.neg.items()}, "zero": self.zero,
                "n": self.n, "min": None if self.n == 0 else self.min,
                "max": None if self.n == 0 else self.max}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Sketch:
        s = cls()
        s.pos = {int(k): v for k, v in d["pos"].items()}
        s.neg = {int(k): v for k, v in d["neg"].items()}
        s.zero, s.n = d["zero"], d["n"]
        s.min = math.inf if d["min"] is None else d["min"]
        s.max = -math.inf if d["max"] is None else d["max"]
        return s


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


class VersionStats:
    """Everything the Monitor knows about one (model, version, variant)."""

    def __init__(self, class_labels: list[str] | None, window: int) -> None:
        self.class_labels = class_labels
        self.requests = 0
        self.rows = 0
        self.errors = 0
        self.statuses: dict[str, int] = {}
        self.latency = Sketch()
        self.label_counts: dict[str, int] = {}
        self.prob_sums: list[float] = [0.0] * len(class_labels or ())
        self.values = Sketch()
        self.value_moments = Moments()
        self.agreement_sum = 0.0
        self.agreement_rows = 0
        self.first_time: float | None = None
        self.last_time: float | None = None
        self.quality: ClassifierQuality | RegressorQuality = (
            ClassifierQuality(len(class_labels), window) if class_labels
            else RegressorQuality(window))

    def add_prediction(self, data: dict[str, Any], ts: float) -> None:
        # the Monitor calls this for every record: plain comparisons, few lookups
        self.requests += 1
        rows = int(data.get("rows") or 0)
        self.rows += rows
        status = data.get("status", "ok")
        statuses = self.statuses
        statuses[status] = statuses.get(status, 0) + 1
        if status != "ok":
            self.errors += 1
        latency = data.get("latency_seconds")
        if isinstance(latency, (int, float)):
            self.latency.add(float(latency))
        if self.first_time is None or ts < self.first_time:
            self.first_time = ts
        if self.last_time is None or ts > self.last_time:
            self.last_time = ts
        agreement = data.get("agreement")
        if agreement is not None:
            self.agreement_sum += agreement * rows
            self.agreement_rows += rows
        outputs = data.get("outputs")
        if not outputs:
            return
        counts, sums, labels = self.label_counts, self.prob_sums, self.class_labels or ()
        for out in outputs:
            label = out.get("label")
            if label is not None:
                counts[label] = counts.get(label, 0) + 1
                probs = out.get("probabilities")
                if probs:
                    for i, c in enumerate(labels):
                        sums[i] += probs.get(c, 0.0)
            elif "value" in out:
                self.values.add(out["value"])
                self.value_moments.add(out["value"])

    def add_label(self, output: dict[str, Any], truth: Any) -> None:
        """Score one answer against its ground truth (a class label or a number)."""
        q = self.quality
        if isinstance(q, ClassifierQuality):
            labels = self.class_labels or []
            probs = output.get("probabilities") or {}
            q.add(labels.index(truth), int(output["label_index"]),
                  [float(probs.get(c, 0.0)) for c in labels])
        else:
            q.add(float(truth), float(output["value"]))

    def report(self) -> dict[str, Any]:
        """What ``GET /admin/models/{m}/stats`` shows for this version and variant."""
        out: dict[str, Any] = {
            "requests": self.requests, "rows": self.rows, "errors": self.errors,
            "error_rate": self.errors / self.requests if self.requests else None,
            "statuses": dict(self.statuses),
            "latency_seconds": {"p50": self.latency.quantile(0.5),
                                "p95": self.latency.quantile(0.95),
                                "p99": self.latency.quantile(0.99)},
            "first_time": self.first_time, "last_time": self.last_time,
        }
        predicted = sum(self.label_counts.values())
        if self.class_labels:
            out["predictions"] = {
                "rows": predicted,
                "labels": {c: self.label_counts.get(c, 0) for c in self.class_labels},
                "label_share": {c: self.label_counts.get(c, 0) / predicted if predicted else None
                                for c in self.class_labels},
                "mean_probability": {c: self.prob_sums[i] / predicted if predicted else None
                                     for i, c in enumerate(self.class_labels)}}
        else:
            m = self.value_moments
            out["predictions"] = {
                "rows": m.n, "mean": m.mean if m.n else None,
                "std": math.sqrt(m.variance) if m.n else None,
                "min": self.values.min if m.n else None, "max": self.values.max if m.n else None,
                "p05": self.values.quantile(0.05), "p50": self.values.quantile(0.5),
                "p95": self.values.quantile(0.95)}
        if self.agreement_rows:
            out["agreement_with_primary"] = self.agreement_sum / self.agreement_rows
        out["quality"] = {"cumulative": self.quality.cumulative(),
                          "window": self.quality.windowed()}
        return out

    def to_dict(self) -> dict[str, Any]:
        return {"class_labels": self.class_labels, "requests": self.requests, "rows": self.rows,
                "errors": self.errors, "statuses": self.statuses,
                "latency": self.latency.to_dict(), "label_counts": self.label_counts,
                "prob_sums": self.prob_sums, "values": self.values.to_dict(),
                "value_moments": self.value_moments.to_dict(),
                "agreement_sum": self.agreement_sum, "agreement_rows": self.agreement_rows,
                "first_time": self.first_time, "last_time": self.last_time,
                "quality": self.quality.to_dict()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> VersionStats:
        q = d["quality"]
        s = cls(d["class_labels"], q["window_size"])
        s.requests, s.rows, s.errors = d["requests"], d["rows"], d["errors"]
        s.statuses = dict(d["statuses"])
        s.latency = Sketch.from_dict(d["latency"])
        s.label_counts = dict(d["label_counts"])
        s.prob_sums = list(d["prob_sums"])
        s.values = Sketch.from_dict(d["values"])
        s.value_moments = Moments.from_dict(d["value_moments"])
        s.agreement_sum, s.agreement_rows = d["agreement_sum"], d["agreement_rows"]
        s.first_time, s.last_time = d["first_time"], d["last_time"]
        s.quality = (ClassifierQuality.from_dict(q) if q["kind"] == "classifier"
                     else RegressorQuality.from_dict(q))
        return s
