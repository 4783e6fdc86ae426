"""Quality metrics equal scikit-learn's on the same pairs; stats survive a JSON round trip."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn import metrics as skm

from monitoring.quality.scores import ClassifierQuality, RegressorQuality
from monitoring.quality.stats import Sketch, VersionStats


def _classifier_pairs(k: int, n: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[truth]
    probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return truth, probs.argmax(axis=1), probs


@pytest.mark.parametrize(("k", "n"), [(2, 400), (3, 500)])
def test_classifier_metrics_equal_scikit_learn(k: int, n: int) -> None:
    truth, pred, probs = _classifier_pairs(k, n, seed=k)
    q = ClassifierQuality(k, window=150)
    for t, p, pr in zip(truth, pred, probs, strict=True):
        q.add(int(t), int(p), pr.tolist())
    avg = "binary" if k == 2 else "macro"

    def expected(t: np.ndarray, p: np.ndarray, pr: np.ndarray) -> dict[str, float]:
        return {"accuracy": skm.accuracy_score(t, p),
                "precision": skm.precision_score(t, p, average=avg, zero_division=0),
                "recall": skm.recall_score(t, p, average=avg, zero_division=0),
                "f1": skm.f1_score(t, p, average=avg, zero_division=0),
                "log_loss": skm.log_loss(t, pr, labels=list(range(k))),
                "roc_auc": skm.roc_auc_score(t, pr[:, 1]) if k == 2 else
                skm.roc_auc_score(t, pr, multi_class="ovr", average="macro")}

    cum, win = q.cumulative(), q.windowed()
    assert cum["labels"] == n and win["labels"] == 150
    for name, value in expected(truth, pred, probs).items():
        # the cumulative AUC comes from 1,000-bin histograms: ties within 0.001
        tol = 2e-3 if name == "roc_auc" else 1e-9
        assert cum[name] == pytest.approx(value, abs=tol), name
    for name, value in expected(truth[-150:], pred[-150:], probs[-150:]).items():
        assert win[name] == pytest.approx(value, abs=1e-9), name


def test_regressor_metrics_equal_scikit_learn() -> None:
    rng = np.random.default_rng(3)
    truth = rng.normal(150, 60, 300)
    pred = truth + rng.normal(0, 25, 300)
    q = RegressorQuality(window=100)
    for t, p in zip(truth, pred, strict=True):
        q.add(float(t), float(p))
    for got, (t, p) in ((q.cumulative(), (truth, pred)),
                        (q.windowed(), (truth[-100:], pred[-100:]))):
        assert got["mae"] == pytest.approx(skm.mean_absolute_error(t, p), rel=1e-9)
        assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(t, p)), rel=1e-9)
        assert got["r2"] == pytest.approx(skm.r2_score(t, p), rel=1e-9)


def test_undefined_metrics_are_zero_or_none_not_errors() -> None:
    q = ClassifierQuality(2, window=10)
    q.add(1, 1, [0.2, 0.8])  # one class only: AUC undefined, precision of class 1 defined
    cum = q.cumulative()
    assert cum["roc_auc"] is None and cum["accuracy"] == 1.0 and cum["precision"] == 1.0
    assert ClassifierQuality(2, window=10).cumulative() == {"labels": 0}


@given(st.lists(st.floats(min_value=1e-6, max_value=1e4), min_size=1, max_size=300))
def test_sketch_quantiles_are_within_one_percent(values: list[float]) -> None:
    sketch = Sketch()
    for v in values:
        sketch.add(v)
    arr = np.sort(np.array(values))
    for q in (0.5, 0.95, 0.99):
        exact = arr[int(np.floor(q * (len(arr) - 1)))]  # the lower order statistic
        got = sketch.quantile(q)
        assert got is not None and abs(got - exact) <= 0.0101 * exact


def test_version_stats_round_trip_through_json() -> None:
    s = VersionStats(["malignant", "benign"], window=50)
    for i in range(30):
        out = {"label": "benign", "label_index": 1,
               "probabilities": {"malignant": 0.1 + i / 100, "benign": 0.9 - i / 100}}
        s.add_prediction({"rows": 1, "status": "ok" if i % 7 else "error",
                          "latency_seconds": 0.001 * (i + 1), "outputs": [out]}, 1e9 + i)
        s.add_label(out, "benign" if i % 3 else "malignant")
    back = VersionStats.from_dict(orjson.loads(orjson.dumps(s.to_dict())))
    assert back.report() == s.report()
    report = s.report()
    assert (report["requests"], report["errors"]) == (30, 5)
    assert report["predictions"]["labels"] == {"malignant": 0, "benign": 30}
    assert report["quality"]["cumulative"]["labels"] == 30

    r = VersionStats(None, window=5)
    r.add_prediction({"rows": 1, "status": "ok", "latency_seconds": 0.01,
                      "outputs": [{"value": 151.0}]}, 1e9)
    r.add_label({"value": 151.0}, 140.0)
    back_r = VersionStats.from_dict(orjson.loads(orjson.dumps(r.to_dict())))
    assert back_r.report() == r.report()
    assert r.report()["quality"]["cumulative"]["mae"] == 11.0


def test_cumulative_metrics_equal_river_metrics_on_the_same_stream() -> None:
    from river import metrics as rm

    truth, pred, probs = _classifier_pairs(2, 300, seed=9)
    q = ClassifierQuality(2, window=50)
    river = {"accuracy": rm.Accuracy(), "precision": rm.Precision(), "recall": rm.Recall(),
             "f1": rm.F1(), "log_loss": rm.LogLoss()}
    for t, p, pr in zip(truth, pred, probs, strict=True):
        q.add(int(t), int(p), pr.tolist())
        for name, m in river.items():
            if name == "log_loss":
                m.update(bool(t), float(pr[1]))
            else:
                m.update(bool(t), bool(p))
    cum = q.cumulative()
    for name, m in river.items():
        assert cum[name] == pytest.approx(m.get(), abs=1e-9), name

    rng = np.random.default_rng(4)
    y = rng.normal(100, 20, 200)
    yhat = y + rng.normal(0, 5, 200)
    r = RegressorQuality(window=10)
    river_r = {"mae": rm.MAE(), "rmse": rm.RMSE(), "r2": rm.R2()}
    for a, b in zip(y, yhat, strict=True):
        r.add(float(a), float(b))
        for m in river_r.values():
            m.update(float(a), float(b))
    for name, m in river_r.items():
        assert r.cumulative()[name] == pytest.approx(m.get(), rel=1e-9), name
