"""The reference profile of a version: what its inputs and predictions looked like at training.

Drift detection standardizes live values against these numbers and compares live histograms
with these quantile bins, so they are computed once, at registration, from the reference rows.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from models.card import ModelCard

N_BINS = 10


def _numeric(values: np.ndarray) -> dict[str, Any]:
    finite = values[np.isfinite(values)]
    if finite.size == 0:
        return {"count": 0, "null_fraction": 1.0}
    edges = np.unique(np.quantile(finite, np.linspace(0, 1, N_BINS + 1)))
    inner = edges[1:-1]
    counts = np.bincount(np.searchsorted(inner, finite, side="right"), minlength=len(inner) + 1)
    return {
        "count": int(finite.size),
        "null_fraction": float(1 - finite.size / values.size),
        "mean": float(finite.mean()),
        "std": float(finite.std(ddof=1)) if finite.size > 1 else 0.0,
        "min": float(finite.min()),
        "max": float(finite.max()),
        "bin_edges": [float(e) for e in inner],
        "bin_fractions": [float(c) / finite.size for c in counts],
    }


def _categorical(values: np.ndarray, categories: tuple[str, ...]) -> dict[str, Any]:
    finite = values[np.isfinite(values)].astype(int)
    counts = np.bincount(finite, minlength=len(categories))
    total = max(int(finite.size), 1)
    return {
        "count": int(finite.size),
        "null_fraction": float(1 - finite.size / values.size),
        "frequencies": {c: float(counts[i]) / total for i, c in enumerate(categories)},
    }


def compute_profile(card: ModelCard, matrix: np.ndarray,
                    predictions: list[dict[str, Any]]) -> dict[str, Any]:
    """Profile of the reference rows (``matrix``, card order) and the model's outputs on them."""
    features: dict[str, Any] = {}
    for j, feat in enumerate(card.features):
        column = matrix[:, j]
        if feat.dtype == "category":
            features[feat.name] = {"dtype": "category",
                                   **_categorical(column, feat.categories or ())}
        else:
            features[feat.name] = {"dtype": feat.dtype, **_numeric(column)}
    if card.is_classifier:
        labels = list(card.class_labels)
        idx = np.array([p["label_index"] for p in predictions])
        counts = np.bincount(idx, minlength=len(labels))
        probs = np.array([[p["probabilities"][lab] for lab in labels] for p in predictions])
        out: dict[str, Any] = {
            "class_fractions": {lab: float(counts[i]) / len(idx) for i, lab in enumerate(labels)},
            "probabilities": {lab: _numeric(probs[:, i]) for i, lab in enumerate(labels)},
        }
    else:
        out = {"value": _numeric(np.array([p["value"] for p in predictions], dtype=float))}
    return {"rows": int(matrix.shape[0]), "features": features, "predictions": out}


def summarize_profile(profile: dict[str, Any]) -> dict[str, Any]:
    """The short view the admin API shows: rows, and mean/std or top categories per feature."""
    summary: dict[str, Any] = {}
    for name, stats in profile.get("features", {}).items():
        if stats.get("dtype") == "category":
            summary[name] = {"frequencies": stats.get("frequencies", {})}
        else:
            summary[name] = {k: stats.get(k) for k in ("mean", "std", "min", "max")}
    return {"rows": profile.get("rows"), "features": summary,
            "predictions": profile.get("predictions")}
