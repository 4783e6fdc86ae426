"""Streaming drift detection, calibrated to a false-alarm budget (docs/monitoring.md, Drift).
Pure: numpy in, alarms and JSON-able snapshots out.

Signals of one model version:

* ``input_mean`` / ``input_scale`` — every numeric feature is mapped to a normal score against
  the version's reference rows (``NormalScores``: z = Φ⁻¹(F_ref(x)), so z ~ N(0, 1) without
  drift whatever the feature's shape), then watched by two-sided CUSUMs on z (allowances
  k = 0.125, 0.25, 0.5: small, medium and large shifts) and on z² − 1 (variance up or down,
  which a mean detector cannot see).
* ``input_joint`` — how the numeric features move together (``joint``): the Mahalanobis
  distance of the normal scores against their reference correlation, CUSUMs on its normal
  score; the alarm names the feature pairs whose correlation moved most.
* ``input_category`` — each category's frequency by two-sided Bernoulli log-likelihood CUSUMs;
  ``input_unseen`` — a category the reference never had, on its first occurrence.
* ``prediction`` — the model's output (class probabilities, or the predicted value) as normal
  scores against the model's outputs on its reference rows, with the same CUSUMs as inputs.
* ``error`` — joined labels: 0/1 errors by Bernoulli CUSUMs against the error rate of the
  labels older than the last ``error_delay`` (classifiers), or standardized residuals
  (regressors).

``input_mean``, ``input_scale``, ``prediction`` and ``error`` may each run River's detectors
instead (``DriftConfig.detectors``, ``river_banks``), ``input_joint`` a River anomaly scorer.

Calibration: one budget per model version (``false_alarms_per_100k`` rows, family-wise) is
split over the signals and then evenly over every one-sided detector of a signal, so adding
features does not add false alarms. Thresholds come from closed forms (River's detectors:
an offline table), never a start-up simulation: Siegmund's approximation for Gaussian
increments, the same with the Cramér root for χ²₁ increments, and Wald's root θ = 1 for
likelihood ratios. ``load_tests/drift_bench.py`` measures what they give.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from monitoring.drift import joint
from monitoring.drift.base import DriftAlarm, DriftConfig, Reference
from monitoring.drift.calibration import (
    bernoulli_kl,
    bernoulli_llr,
    chi2_threshold,
    guarded,
    llr_threshold,
)
from monitoring.drift.columns import (
    MEAN_KS,
    SCALE_COLUMNS,
    SCALE_K,
    bernoulli_columns,
    class_columns,
    llr_group,
    mean_group,
    river_group,
    scale_group,
)
from monitoring.drift.detectors import CusumBank, CusumGroup, NormalScores, PsiBins
from monitoring.drift.river_banks import BINARY

SIGNALS = ("input_mean", "input_scale", "input_joint", "input_category", "input_unseen",
           "prediction", "error")
# Each family's share of the budget, split evenly over its one-sided detectors (joint: inputs)
SHARES = {"inputs": 0.75, "prediction": 0.1, "error": 0.15}
DEFAULTS = {"input_joint": "mahalanobis"}  # every other signal: "cusum" (make drift-bench)


class VersionDrift:
    """Every drift detector of one model version."""

    def __init__(self, model: str, version: str, ref: Reference, config: DriftConfig,
                 classifier: bool) -> None:
        self.model, self.version, self.ref, self.config = model, version, ref, config
        self.classifier = classifier
        self.rows_seen = 0
        self.labels_seen = 0
        budget_arl = 100_000 / config.false_alarms_per_100k  # family-wise in-control run length
        self.numeric = [j for j, k in enumerate(ref.kinds) if k == "numeric"]
        self.categorical = [j for j, k in enumerate(ref.kinds) if k == "category"]
        chosen = self.chosen = {s: config.detectors.get(s, DEFAULTS.get(s, "cusum"))
                                for s in SIGNALS}
        # categorical: per category, Bernoulli LLR CUSUMs for p0 ± each shift
        self.cat_cols: list[tuple[int, int, float, float]] = []  # (feature j, cat i, a, b)
        cat_kl: list[float] = []
        cat_feats: list[str] = []
        cat_labels: list[str] = []
        self.cat_ref: dict[int, np.ndarray] = {}
        for j in self.categorical:
            cats = ref.categories[ref.features[j]]
            col = ref.rows[:, j]
            col = col[np.isfinite(col)].astype(int)
            freq = np.bincount(col, minlength=len(cats))[:len(cats)] / max(len(col), 1)
            self.cat_ref[j] = freq
            for i, p_ref in enumerate(freq):
                if p_ref <= 0:
                    continue  # never seen in the reference: the "unseen" signal's business
                for a, b, kl, label in bernoulli_columns(float(p_ref), len(col),
                                                         config.category_shifts):
                    self.cat_cols.append((j, i, a, b))
                    cat_kl.append(kl)
                    cat_feats.append(ref.features[j])
                    cat_labels.append(f"{cats[i]}:{label}")
        # count the one-sided detectors of the input family first, to split its share
        m = len(self.numeric)
        n_in = len(cat_kl) + m * ((2 * len(MEAN_KS) if chosen["input_mean"] == "cusum" else 1)
                                  + (len(SCALE_COLUMNS) if chosen["input_scale"] == "cusum"
                                     else 1)) + (joint.COLUMNS if m >= 2 else 0)
        arl_in = budget_arl / SHARES["inputs"] * max(n_in, 1)
        stride = config.river_stride
        self.scores = NormalScores(ref.rows[:, self.numeric]) if self.numeric else None
        self.groups: dict[str, CusumGroup] = {}
        names = [ref.features[j] for j in self.numeric]
        if self.numeric:
            self.groups["input_mean"] = (
                mean_group("input_mean", names, arl_in) if chosen["input_mean"] == "cusum"
                else river_group("input_mean", chosen["input_mean"], names, arl_in, stride))
            self.groups["input_scale"] = (
                scale_group(names, arl_in) if chosen["input_scale"] == "cusum"
                else river_group("input_scale", chosen["input_scale"], names, arl_in, stride))
        self.joint: joint.JointSignal | None = None
        if m >= 2 and self.scores is not None:
            self.joint = joint.JointSignal(self.scores.transform(ref.rows[:, self.numeric]),
                                           names, chosen["input_joint"], arl_in / joint.COLUMNS)
            self.groups["input_joint"] = self.joint.group
        if self.cat_cols:
            self.groups["input_category"] = CusumGroup(
                "input_category", CusumBank(np.zeros(len(cat_kl)),
                                            np.array([llr_threshold(arl_in, kl)
                                                      for kl in cat_kl])),
                cat_feats, cat_labels)
        # predictions: normal scores of the outputs, and (classifiers) the predicted class's
        # frequency by Bernoulli CUSUMs, as for a categorical input
        self.out_scores = NormalScores(ref.outputs)
        self.class_cols: list[tuple[int, float, float]] = []  # (class, a, b)
        class_kl: list[float] = []
        class_labels: list[str] = []
        if classifier and ref.outputs.shape[1] > 1:
            self.class_cols, class_kl, class_labels = class_columns(ref.outputs,
                                                                    ref.output_names)
        if chosen["prediction"] == "cusum":
            n_pred = len(ref.output_names) * 2 * len(MEAN_KS) + len(self.class_cols)
            arl_pred = budget_arl / SHARES["prediction"] * n_pred
            g = mean_group("prediction", ref.output_names, arl_pred)
            if self.class_cols:
                g = llr_group("prediction", g, class_kl, arl_pred,
                              [ref.output_names[c] for c, _, _ in self.class_cols],
                              class_labels)
        else:
            series = [*ref.output_names, *[ref.output_names[c] for c, _, _ in self.class_cols]]
            g = river_group("prediction", chosen["prediction"], series,
                            budget_arl / SHARES["prediction"] * len(series), stride)
        self.groups["prediction"] = g
        # errors: their reference is the labels themselves (see update_errors)
        self._error_arl = budget_arl / SHARES["error"]
        if chosen["error"] != "cusum" and (classifier or chosen["error"] not in BINARY):
            self.groups["error"] = river_group(
                "error", chosen["error"], ["error_rate" if classifier else "residual"],
                self._error_arl)
        self.ref_n = 0
        self.ref_sum = 0.0
        self.ref_sq = 0.0
        self._delay: list[np.ndarray] = []
        self.error_p0: float | None = None
        self.residual_sd: float | None = None
        # windowed PSI inputs: the last `window` rows
        size = max(config.window, config.keep)
        self.window = np.full((size, len(ref.features)), np.nan)
        self.window_out = np.full((size, len(ref.output_names)), np.nan)
        self.psi_bins = PsiBins(ref.rows, [
            len(ref.categories[name]) if kind == "category" else None
            for name, kind in zip(ref.features, ref.kinds, strict=True)])
        self.window_bins = np.zeros((size, len(ref.features)), dtype=np.int32)  # binned once
        self.window_pos = 0
        self.window_fill = 0
        self._psi: tuple[int, dict[str, float]] | None = None  # (rows_seen, PSI) last computed
        self.unseen: set[tuple[str, str]] = set()

    # ------------------------------------------------------------------ updates
    def _mean_inputs(self, z: np.ndarray) -> np.ndarray:
        """Columns for the mean bank: for each k, (+z, −z)."""
        both = np.concatenate([z, -z], axis=1)
        return np.concatenate([both] * len(MEAN_KS), axis=1)

    def update_rows(self, matrix: np.ndarray, outputs: np.ndarray, now: float
                    ) -> list[DriftAlarm]:
        """A batch of live rows (card order) and the model's output scores for them."""
        alarms: list[DriftAlarm] = []
        n = len(matrix)
        if n == 0:
            return alarms
        base = self.rows_seen
        self.rows_seen += n
        self._remember(matrix, outputs)
        if self.scores is not None:
            z = self.scores.transform(matrix[:, self.numeric])
            alarms += self._run("input_mean", z, base, now)
            alarms += self._run("input_scale", z * z - 1.0, base, now)
            if self.joint is not None:
                alarms += self.joint.update(
                    z, base, lambda y: self._run("input_joint", y, base, now),
                    lambda k: self.scores.transform(  # type: ignore[union-attr]
                        self.recent(k)[0][:, self.numeric]))
        if self.cat_cols:
            y = np.empty((n, len(self.cat_cols)))
            for c, (j, i, a, b) in enumerate(self.cat_cols):
                y[:, c] = np.where(matrix[:, j] == i, a, b)
            alarms += self._run("input_category", y, base, now)
        for j in self.categorical:
            cats = self.ref.categories[self.ref.features[j]]
            col = matrix[:, j]
            for i in np.unique(col[np.isfinite(col)]).astype(int):
                if i < len(cats) and self.cat_ref[j][i] == 0:
                    key = (self.ref.features[j], cats[i])
                    if key not in self.unseen:
                        self.unseen.add(key)
                        alarms.append(DriftAlarm(
                            self.model, self.version, "input_unseen",
                            [{"feature": key[0], "category": key[1], "ratio": math.inf}],
                            math.inf, base + int(np.argmax(col == i)) + 1, now))
        y = self.out_scores.transform(outputs)
        if self.class_cols:
            predicted = outputs.argmax(axis=1)
            extra = np.empty((n, len(self.class_cols)))
            for c, (cls, a, b) in enumerate(self.class_cols):
                extra[:, c] = np.where(predicted == cls, a, b)
            y = np.concatenate([y, extra], axis=1)
        alarms += self._run("prediction", y, base, now)
        return alarms

    def update_errors(self, errors: np.ndarray, now: float) -> list[DriftAlarm]:
        """A batch of errors of joined labels: 0/1 (classifier) or residuals (regressor).

        The reference error rate is every label older than ``error_delay`` labels (the first
        ``error_warmup`` to start with), so a drift is judged against what came before it and
        the estimate sharpens the longer the version runs."""
        errors = np.asarray(errors, dtype=np.float64)
        if not len(errors):
            return []
        if self.ref_n < self.config.error_warmup:
            take = errors[:self.config.error_warmup - self.ref_n]
            self._absorb(take)
            if self.classifier and self._river_errors() and self.chosen["error"] in BINARY:
                self.groups["error"].bank.update(take[:, None])  # warm-up: no alarm
            self.labels_seen += len(take)
            errors = errors[len(take):]
            if not len(errors):
                return []
        base = self.labels_seen
        self.labels_seen += len(errors)
        raw = errors
        if self._river_errors():
            if self.chosen["error"] not in BINARY:  # continuous: calibrated on unit variance
                errors = (errors - self.ref_sum / self.ref_n) / math.sqrt(max(
                    self.ref_sq / self.ref_n - (self.ref_sum / self.ref_n) ** 2, 1e-12))
            y = errors[:, None]
        elif self.classifier:
            p0 = guarded(self.ref_sum / self.ref_n, self.ref_n, True)
            self.error_p0 = p0
            cols, hs = [], []
            shifts = [d for d in self.config.error_shifts if p0 + d < 1]
            for d in shifts:
                a, b = bernoulli_llr(p0, p0 + d)
                cols.append(np.where(errors > 0.5, a, b))
                hs.append(llr_threshold(self._error_arl * len(shifts),
                                        bernoulli_kl(p0, p0 + d)))
            self._error_group([f"rate+{d:g}" for d in shifts], np.zeros(len(shifts)),
                              np.array(hs))
            y = np.stack(cols, axis=1)
        else:
            mean = self.ref_sum / self.ref_n
            var = max(self.ref_sq / self.ref_n - mean * mean, 1e-12)
            sd = math.sqrt(var) * (1 + 2 / math.sqrt(2 * self.ref_n))  # guard, as for rates
            self.residual_sd = sd
            z = (errors - mean) / sd
            arl = self._error_arl * (2 * len(MEAN_KS) + 1)
            m = mean_group("error", ["residual"], arl)
            self._error_group([*m.label, "scale_up"], np.append(m.bank.k, SCALE_K),
                              np.append(m.bank.h, chi2_threshold(SCALE_K, arl, True)))
            y = np.concatenate([self._mean_inputs(z[:, None]), (z * z - 1.0)[:, None]], axis=1)
        alarms = self._run("error", y, base, now)
        self._delay.append(raw)
        held = sum(len(e) for e in self._delay)
        while self._delay and held - len(self._delay[0]) >= self.config.error_delay:
            old = self._delay.pop(0)
            held -= len(old)
            self._absorb(old)
        return alarms

    def _river_errors(self) -> bool:
        g = self.groups.get("error")
        return g is not None and self.chosen["error"] in g.label

    def _absorb(self, errors: np.ndarray) -> None:
        self.ref_n += len(errors)
        self.ref_sum += float(errors.sum())
        self.ref_sq += float((errors * errors).sum())

    def _error_group(self, labels: list[str], k: np.ndarray, h: np.ndarray) -> CusumGroup:
        g = self.groups.get("error")
        if g is None or len(g.bank.k) != len(k):
            name = "error_rate" if self.classifier else "residual"
            g = self.groups["error"] = CusumGroup("error", CusumBank(k, h), [name] * len(k), labels)
        g.bank.k, g.bank.h, g.label = k, h, labels
        return g

    def _remember(self, matrix: np.ndarray, outputs: np.ndarray) -> None:
        w = len(self.window)
        for src, dst in ((matrix, self.window), (outputs, self.window_out),
                         (self.psi_bins.bin(matrix[-w:]), self.window_bins)):
            rows = src[-w:]
            idx = (self.window_pos + np.arange(len(rows))) % w
            dst[idx] = rows
        self.window_pos = (self.window_pos + min(len(matrix), w)) % w
        self.window_fill = min(w, self.window_fill + len(matrix))

    def _run(self, signal: str, y: np.ndarray, base: int, now: float) -> list[DriftAlarm]:
        group = self.groups[signal]
        crossings = group.bank.update(y, group.src, group.sign)
        if not crossings:
            return []
        t, col, stat = crossings[0]  # one alarm per signal per batch: the first crossing
        # rank features by how close their detectors were at that row (the crossing one ≥ 1)
        row = group.bank.first_row if group.bank.first_row is not None else group.bank.s
        ratios: dict[str, float] = {}
        for c, name in enumerate(group.feature):
            ratios[name] = max(ratios.get(name, 0.0), float(row[c] / group.bank.h[c]))
        ranked = sorted(ratios.items(), key=lambda kv: -kv[1])
        features = [{"feature": name, "ratio": round(r, 4)} for name, r in ranked[:10]]
        features[0]["detector"] = group.label[col] if group.label else ""
        return [DriftAlarm(self.model, self.version, signal, features,
                           round(float(stat / group.bank.h[col]), 4), int(base + t + 1), now)]

    # ------------------------------------------------------------------ reading

    def recent(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """The last ``n`` live rows and their outputs, oldest first."""
        n = min(n, self.window_fill)
        idx = (self.window_pos - n + np.arange(n)) % len(self.window)
        return self.window[idx].copy(), self.window_out[idx].copy()

    def feature_psi(self) -> dict[str, float]:
        """PSI of the last ``window`` live rows against the reference, per feature, on 10
        reference quantile bins (categories: per category). Rows are binned as they arrive;
        this counts the window's bins (once per batch of rows: the Monitor's save and its
        metrics both ask)."""
        if self.window_fill == 0:
            return {}
        if self._psi is not None and self._psi[0] == self.rows_seen:
            return dict(self._psi[1])
        n = min(self.config.window, self.window_fill)
        idx = (self.window_pos - n + np.arange(n)) % len(self.window)
        values = self.psi_bins.psi(self.window_bins[idx]).tolist()
        out = {name: round(v, 6) for name, v in zip(self.ref.features, values, strict=True)
               if v == v}  # NaN: no binned value
        self._psi = (self.rows_seen, out)
        return dict(out)

    def state(self) -> dict[str, Any]:
        """Every signal's detectors: how close each is to alarming (a feature: its closest
        detector; the ten closest features, ties in card order)."""
        out: dict[str, Any] = {}
        for signal, g in self.groups.items():
            names = g.names
            per = np.zeros(len(names))
            np.maximum.at(per, g.column_feature, g.bank.s / g.bank.h)
            top = np.argsort(-per, kind="stable")[:10].tolist()
            values = per.tolist()
            out[signal] = {"max_ratio": round(max(values, default=0.0), 4),
                           "features": {names[i]: round(values[i], 4) for i in top},
                           "detector": self.chosen.get(signal, "cusum")}
        if "input_joint" in out:
            out["input_joint"]["pairs"] = self.joint.pairs if self.joint else []
        return out

    def snapshot(self) -> dict[str, Any]:
        return {"rows_seen": self.rows_seen, "labels_seen": self.labels_seen,
                "banks": {s: g.bank.snapshot() for s, g in self.groups.items()},
                "joint_pairs": self.joint.pairs if self.joint else [],
                "error_ref": [self.ref_n, self.ref_sum, self.ref_sq],
                "error_delay": [e.tolist() for e in self._delay],
                "unseen": sorted(self.unseen),
                "reference_source": self.ref.source}

    def restore(self, doc: dict[str, Any]) -> None:
        self._psi = None
        self.rows_seen = doc.get("rows_seen", 0)
        self.labels_seen = doc.get("labels_seen", 0)
        self.ref_n, self.ref_sum, self.ref_sq = doc.get("error_ref", [0, 0.0, 0.0])
        self._delay = [np.array(e, dtype=np.float64) for e in doc.get("error_delay", [])]
        for signal, s in doc.get("banks", {}).items():
            g = self.groups.get(signal)
            if g is None and signal == "error":
                g = self._error_group([""] * len(s), np.zeros(len(s)), np.ones(len(s)))
            if g is not None:
                g.bank.restore(s)
        if self.joint is not None:
            self.joint.pairs = doc.get("joint_pairs", [])
        self.unseen = {tuple(x) for x in doc.get("unseen", [])}
