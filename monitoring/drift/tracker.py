"""The Monitor's side of drift: turns log records and joined labels into batches for each
version's ``VersionDrift``, persists detector state and alarms in the Monitor's transaction,
and carries out operators' rebaseline requests."""

from __future__ import annotations

import itertools
import logging
import math
import operator
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd

from models.registry import ModelVersion, reference_matrix
from models.runtime import ModelRuntime
from monitoring.drift.base import DriftAlarm, DriftConfig, Reference
from monitoring.drift.signals import VersionDrift
from store import DriftStore, Engine, Transaction

log = logging.getLogger("vigil.drift")
Key = tuple[str, str]
CHUNK = 1024  # rows per detector update; larger batches spill the CPU cache


def reference_from_version(mv: ModelVersion) -> Reference:
    """A version's drift reference: its registered reference rows and its own outputs on them.
    Inputs the card marks as personal data (``pii: drop`` or ``hash``) are left out: the log
    holds no value of them to compare (docs/security.md, Personal data)."""
    card = mv.card
    matrix = reference_matrix(card, pd.read_parquet(mv.path / "reference.parquet"))
    runtime = ModelRuntime(card, mv.onnx_bytes())
    outputs = output_matrix(card.is_classifier, runtime.predict(matrix),
                            list(card.class_labels))
    kept = [i for i, f in enumerate(card.features) if f.pii == "keep"]
    features = [card.features[i] for i in kept]
    return Reference(
        features=[f.name for f in features],
        kinds=["category" if f.dtype == "category" else "numeric" for f in features],
        categories={f.name: list(f.categories or ()) for f in features
                    if f.dtype == "category"},
        rows=matrix[:, kept], outputs=outputs,
        unmonitored={f.name: f"pii: {f.pii}" for f in card.features if f.pii != "keep"},
        output_names=list(card.class_labels) if card.is_classifier else ["value"])


def output_matrix(classifier: bool, outputs: list[dict[str, Any]],
                  labels: list[str]) -> np.ndarray:
    if classifier:
        return np.array([[o["probabilities"].get(c, 0.0) for c in labels] for o in outputs],
                        dtype=np.float64).reshape(len(outputs), len(labels))
    return np.array([[o["value"]] for o in outputs], dtype=np.float64).reshape(len(outputs), 1)


class DriftTracker:
    def __init__(self, engine: Engine, reference_of: Callable[[str, str], Reference | None],
                 config: DriftConfig, *, sample: float = 1.0, rebaseline_rows: int = 2000,
                 seed: int = 0) -> None:
        self.store = DriftStore(engine)
        self.reference_of = reference_of
        self.config = config
        self.sample = sample
        self.rebaseline_rows = rebaseline_rows
        self.rng = np.random.default_rng(seed)
        self.versions: dict[Key, VersionDrift | None] = {}
        # several replicas (log.backend: nats): only the owner of a model's partition has
        # its live rows (monitoring.cluster.PartitionOwner.owns)
        self.owns: Callable[[str], bool] | None = None
        self._raw: dict[Key, tuple[list[Any], list[Any]]] = {}  # this step's inputs, outputs
        self._errors: dict[Key, list[float]] = {}
        self._cat_index: dict[Key, dict[int, dict[str, int]]] = {}
        self._saved: dict[Key, dict[str, Any]] = {}  # snapshots read at load, by version
        self._adopted: dict[Key, dict[str, Any]] = {}  # references adopted by rebaselines

    # ------------------------------------------------------------------ state

    def load(self, tx: Transaction) -> None:
        self.versions.clear()
        self._raw.clear()
        self._errors.clear()
        self._saved, self._adopted = self.store.load(tx)

    def _detector(self, model: str, version: str) -> VersionDrift | None:
        key = (model, version)
        if key in self.versions:
            return self.versions[key]
        det = None
        try:
            ref = self.reference_of(model, version)
        except Exception:
            log.exception("no drift reference for %s:%s; drift is off for it", model, version)
            ref = None
        if ref is not None:
            adopted = self._adopted.get(key)
            if adopted is not None:
                ref = Reference(ref.features, ref.kinds, ref.categories,
                                np.array(adopted["rows"], dtype=np.float64),
                                np.array(adopted["outputs"], dtype=np.float64),
                                ref.output_names, adopted["source"], ref.unmonitored)
            det = VersionDrift(model, version, ref, self.config,
                               classifier=ref.output_names != ["value"])
            saved = self._saved.get(key)
            if saved is not None and saved.get("snapshot", {}).get(
                    "reference_source") == ref.source:
                det.restore(saved["snapshot"])
            self._cat_index[key] = {j: {c: i for i, c in enumerate(ref.categories[name])}
                                    for j, (name, kind) in enumerate(zip(ref.features,
                                                                         ref.kinds,
                                                                         strict=True))
                                    if kind == "category"}
        self.versions[key] = det
        return det

    # ------------------------------------------------------------------ intake

    def observe(self, data: dict[str, Any]) -> None:
        """A prediction record's data (status ok, with inputs and outputs). Only collected
        here; ``flush`` turns a whole step's records into one matrix per version."""
        inputs, outputs = data.get("inputs"), data.get("outputs")
        if not inputs or not outputs or data.get("status") != "ok":
            return
        key = (data["model"], data["version"])
        raw = self._raw.get(key)
        if raw is None:
            if self._detector(*key) is None:
                return
            raw = self._raw[key] = ([], [])
        if self.sample < 1.0 and self.rng.random() >= self.sample:
            return
        raw[0].extend(inputs)
        raw[1].extend(outputs)

    def _matrices(self, key: Key, det: VersionDrift, inputs: list[Any],
                  outputs: list[Any]) -> tuple[np.ndarray, np.ndarray]:
        """Records → (rows in card order, output scores); NaN for nulls and unknowns."""
        ref = det.ref
        n = min(len(inputs), len(outputs))
        inputs, outputs = inputs[:n], outputs[:n]
        width, k = len(ref.features), len(ref.output_names)
        cats = self._cat_index.get(key, {})
        if not cats and width > 1 and k > 1 and det.classifier:
            get_in = operator.itemgetter(*ref.features)
            get_out = operator.itemgetter(*ref.output_names)
            try:  # C-level getters: no per-feature Python
                rows = np.fromiter(itertools.chain.from_iterable(map(get_in, inputs)),
                                   np.float64, count=n * width).reshape(n, width)
                outs = np.fromiter(itertools.chain.from_iterable(
                    get_out(o["probabilities"]) for o in outputs), np.float64,
                    count=n * k).reshape(n, k)
                return rows, outs
            except (KeyError, TypeError, ValueError):
                pass  # a null, missing or odd value: the careful path
        rows = np.empty((n, width))
        for i, rec in enumerate(inputs):
            for j, name in enumerate(ref.features):
                v = rec.get(name)
                if v is None:
                    rows[i, j] = math.nan
                elif j in cats:
                    rows[i, j] = float(cats[j][v]) if v in cats[j] else math.nan
                elif isinstance(v, (int, float)):
                    rows[i, j] = float(v)
                else:  # a hashed value (personal data another version marks): no signal
                    rows[i, j] = math.nan
        outs = np.empty((n, k))
        for i, o in enumerate(outputs):
            if det.classifier:
                probs = o.get("probabilities") or {}
                outs[i] = [float(probs.get(c, 0.0)) for c in ref.output_names]
            else:
                outs[i, 0] = float(o.get("value", math.nan))
        return rows, outs

    def observe_label(self, model: str, version: str, output: dict[str, Any],
                      truth: Any) -> None:
        det = self._detector(model, version)
        if det is None:
            return
        if det.classifier:
            error = float(output.get("label") != truth)
        else:
            error = float(truth) - float(output.get("value", math.nan))
        self._errors.setdefault((model, version), []).append(error)

    # ------------------------------------------------------------------ per step

    def flush(self, tx: Transaction, now: float) -> list[DriftAlarm]:
        """Run the detectors on what the step gathered; persist state and alarms in ``tx``."""
        alarms: list[DriftAlarm] = []
        changed = set(self._raw) | set(self._errors)
        for key in changed:
            det = self.versions.get(key)
            if det is None:
                continue
            raw = self._raw.pop(key, None)
            if raw is not None and raw[0]:
                matrix, outs = self._matrices(key, det, raw[0], raw[1])
                for i in range(0, len(matrix), CHUNK):  # cache-sized pieces
                    alarms += det.update_rows(matrix[i:i + CHUNK], outs[i:i + CHUNK], now)
            errors = self._errors.pop(key, [])
            if errors:
                alarms += det.update_errors(np.array(errors), now)
        self._raw.clear()
        self._errors.clear()
        active = self.store.open_signals(tx) if alarms else set()
        for a in alarms:
            if (a.model, a.version, a.signal) in active:
                continue  # one open alarm per signal until an operator acknowledges it
            active.add((a.model, a.version, a.signal))
            self.store.add_alarm(tx, a.model, a.version, a.signal, a.to_dict(), a.time)
        for key in changed:
            self._save(tx, key, now)
        return alarms

    def active_signals(self) -> set[tuple[str, str, str]]:
        """(model, version, signal) of every open alarm, as committed."""
        return self.store.open_signals()

    def _save(self, tx: Transaction, key: Key, now: float) -> None:
        det = self.versions.get(key)
        if det is None:
            return
        self.store.put_state(tx, *key, {
            "snapshot": det.snapshot(), "state": det.state(), "psi": det.feature_psi(),
            "rows_seen": det.rows_seen, "labels_seen": det.labels_seen,
            "reference": {"source": det.ref.source, "rows": len(det.ref.rows)},
            "unmonitored": det.ref.unmonitored,
            "error_rate_reference": det.error_p0}, now)

    def process_requests(self, tx: Transaction, now: float) -> None:
        """Rebaseline: adopt the last N live rows as the version's reference (the registered
        one stays in the registry), restart its detectors, and close its open alarms."""
        for req in self.store.pending_requests(tx):
            if self.owns is not None and not self.owns(req.model):
                continue  # its owner's to carry out
            key = (req.model, req.version)
            det = self._detector(*key)
            if det is None:
                outcome = "failed: no drift detectors for this version"
            elif det.window_fill < req.rows:
                if now - req.ts < 3600:
                    continue  # wait for enough live rows
                outcome = f"failed: only {det.window_fill} live rows after an hour"
            else:
                rows, outs = det.recent(req.rows)
                source = f"rebaseline {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime(now))} " \
                         f"by {req.requested_by} ({req.rows} live rows)"
                self.store.adopt_reference(tx, req.model, req.version,
                                           {"rows": rows, "outputs": outs, "source": source},
                                           now)
                self._adopted = {**self._adopted,
                                 key: {"rows": rows, "outputs": outs, "source": source}}
                self._saved.pop(key, None)
                self.versions.pop(key, None)
                self._detector(*key)
                self._save(tx, key, now)
                self.store.close_alarms(tx, req.model, req.version,
                                        f"rebaseline:{req.requested_by}", now)
                outcome = f"done: {source}"
            self.store.finish_request(tx, req.id, now, outcome)


def read_drift(engine: Engine, model: str, version: str,
               alarms_limit: int = 20) -> dict[str, Any]:
    """What ``GET /admin/drift/{model}`` shows for one version."""
    stored = DriftStore(engine).read_version(model, version, alarms_limit)
    doc = stored.doc or {}
    alarms = [{"id": a.id, **a.doc, "active": a.acknowledged_at is None,
               "acknowledged_at": a.acknowledged_at, "acknowledged_by": a.acknowledged_by}
              for a in stored.alarms]
    last = {}
    for a in reversed(alarms):
        last[a["signal"]] = a
    signals = {}
    for signal, st in doc.get("state", {}).items():
        signals[signal] = {**st, "last_alarm": last.get(signal),
                           "alarm_active": bool(last.get(signal, {}).get("active"))}
    return {"model": model, "version": version, "rows_seen": doc.get("rows_seen", 0),
            "labels_seen": doc.get("labels_seen", 0), "reference": doc.get("reference"),
            "error_rate_reference": doc.get("error_rate_reference"), "signals": signals,
            "psi": doc.get("psi", {}), "unmonitored": doc.get("unmonitored", {}),
            "alarms": alarms,
            "active_alarms": [a for a in alarms if a["active"]],
            "rebaselines": [{"id": r.id, "rows": r.rows, "requested_by": r.requested_by,
                             "ts": r.ts, "done_at": r.done_at, "outcome": r.outcome}
                            for r in stored.requests],
            "updated_at": stored.updated_at}
