"""Train the demo models from data scikit-learn ships, export them to ONNX, write their cards.

    python -m models.demo.train [--out models/demo/artifacts]

Three classifier versions on breast_cancer (v1 logistic regression, v2 gradient boosting,
v3 random forest) and one regressor on diabetes. Everything is seeded: running it again
writes the same ONNX bytes, cards and reference rows (on the same library versions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import platform
from importlib.metadata import version as pkg_version
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from skl2onnx import to_onnx
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.ensemble import GradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.metrics import (
    accuracy_score,
    f1_score,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
    roc_auc_score,
)
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

SEED = 0
CREATED_AT = "2026-11-27T00:00:00Z"  # fixed so that a re-run reproduces the cards byte for byte
OUT = Path(__file__).with_name("artifacts")
LIBRARIES = ("scikit-learn", "skl2onnx", "onnx", "numpy")


def _code_fingerprint() -> str:
    """Git's blob id of this file: what `git hash-object models/demo/train.py` prints."""
    data = Path(__file__).read_bytes()
    return "blob:" + hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _dataset_sha256(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256()
    h.update(np.ascontiguousarray(x, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(y, dtype=np.float64).tobytes())
    return h.hexdigest()


def _environment() -> dict[str, Any]:
    return {"python": platform.python_version(),
            "libraries": {lib: pkg_version(lib) for lib in LIBRARIES}}


def _inputs(frame: pd.DataFrame) -> list[dict[str, Any]]:
    return [{"name": c, "dtype": "float", "min": round(float(frame[c].min()), 6),
             "max": round(float(frame[c].max()), 6)} for c in frame.columns]


def _write(out: Path, name: str, version: str, onx: Any, card: dict[str, Any],
           reference: pd.DataFrame) -> None:
    target = out / name / version
    target.mkdir(parents=True, exist_ok=True)
    (target / "model.onnx").write_bytes(onx.SerializeToString())
    (target / "card.json").write_text(json.dumps(card, indent=2, sort_keys=True) + "\n")
    reference.to_csv(target / "reference.csv", index=False, float_format="%.9g")


def train_breast_cancer(out: Path) -> None:
    data = load_breast_cancer(as_frame=True)
    x, y = data.data, data.target
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=0.25, random_state=SEED, stratify=y)
    candidates = {
        "v1": ("logistic regression", make_pipeline(
            StandardScaler(), LogisticRegression(C=1.0, max_iter=1000, random_state=SEED)),
               {"model": "LogisticRegression", "C": 1.0, "max_iter": 1000, "scaler": "standard"}),
        "v2": ("gradient boosting", GradientBoostingClassifier(
            n_estimators=60, max_depth=3, learning_rate=0.1, random_state=SEED),
               {"model": "GradientBoostingClassifier", "n_estimators": 60, "max_depth": 3,
                "learning_rate": 0.1}),
        "v3": ("random forest", RandomForestClassifier(
            n_estimators=40, max_depth=6, random_state=SEED, n_jobs=1),
               {"model": "RandomForestClassifier", "n_estimators": 40, "max_depth": 6}),
    }
    labels = [str(n) for n in data.target_names]  # index order = ONNX output order
    sha = _dataset_sha256(x.to_numpy(), y.to_numpy())
    for version, (title, clf, hyper) in candidates.items():
        clf.fit(x_train, y_train)
        step = clf.steps[-1][1] if hasattr(clf, "steps") else clf
        onx = to_onnx(clf, x_train.to_numpy(dtype=np.float32)[:1], target_opset=17,
                      options={id(step): {"zipmap": False}})
        metrics = {}
        for split, xs, ys in (("training", x_train, y_train), ("holdout", x_test, y_test)):
            proba = clf.predict_proba(xs)
            pred = proba.argmax(axis=1)
            metrics[split] = {"accuracy": round(accuracy_score(ys, pred), 6),
                              "f1": round(f1_score(ys, pred), 6),
                              "roc_auc": round(roc_auc_score(ys, proba[:, 1]), 6),
                              "log_loss": round(log_loss(ys, proba), 6)}
        card = {
            "name": "breast_cancer", "version": version, "created_at": CREATED_AT,
            "task": "binary", "class_labels": labels,
            "description": f"Breast cancer diagnosis from 30 cell-nucleus features ({title}).",
            "intended_use": "Demo of Vigil's champion/canary/shadow routing; not for diagnosis.",
            "inputs": _inputs(x),
            "onnx_input": {"name": onx.graph.input[0].name, "layout": "matrix",
                           "dtype": "float32"},
            "outputs": [{"name": "label", "role": "label", "datatype": "INT64", "shape": [-1]},
                        {"name": "probabilities", "role": "probabilities", "datatype": "FP32",
                         "shape": [-1, len(labels)]}],
            "lineage": {"dataset": "sklearn.datasets.load_breast_cancer",
                        "dataset_sha256": sha, "code_commit": _code_fingerprint(),
                        "code_path": "models/demo/train.py", "split_seed": SEED,
                        "hyperparameters": hyper, "environment": _environment()},
            "metrics": metrics,
        }
        _write(out, "breast_cancer", version, onx, card, x_train)


def train_diabetes(out: Path) -> None:
    data = load_diabetes(as_frame=True)
    x, y = data.data, data.target
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.25, random_state=SEED)
    reg = Ridge(alpha=0.1, random_state=SEED).fit(x_train, y_train)
    onx = to_onnx(reg, x_train.to_numpy(dtype=np.float32)[:1], target_opset=17)
    metrics = {}
    for split, xs, ys in (("training", x_train, y_train), ("holdout", x_test, y_test)):
        pred = reg.predict(xs)
        metrics[split] = {"mae": round(mean_absolute_error(ys, pred), 6),
                          "rmse": round(float(np.sqrt(mean_squared_error(ys, pred))), 6),
                          "r2": round(r2_score(ys, pred), 6)}
    card = {
        "name": "diabetes", "version": "v1", "created_at": CREATED_AT, "task": "regression",
        "description": "Disease progression one year after baseline, from 10 features (ridge).",
        "intended_use": "Demo of a regressor behind Vigil; not for clinical use.",
        "inputs": _inputs(x),
        "onnx_input": {"name": onx.graph.input[0].name, "layout": "matrix", "dtype": "float32"},
        "outputs": [{"name": onx.graph.output[0].name, "role": "value", "datatype": "FP32",
                     "shape": [-1, 1]}],
        "lineage": {"dataset": "sklearn.datasets.load_diabetes",
                    "dataset_sha256": _dataset_sha256(x.to_numpy(), y.to_numpy()),
                    "code_commit": _code_fingerprint(), "code_path": "models/demo/train.py",
                    "split_seed": SEED, "hyperparameters": {"model": "Ridge", "alpha": 0.1},
                    "environment": _environment()},
        "metrics": metrics,
    }
    _write(out, "diabetes", "v1", onx, card, x_train)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    train_breast_cancer(args.out)
    train_diabetes(args.out)
    print(f"wrote demo models to {args.out}")


if __name__ == "__main__":
    main()
