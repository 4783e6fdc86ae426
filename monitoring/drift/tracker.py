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
import orjson
import pandas as pd
import sqlalchemy as sa

from models.registry import ModelVersion, reference_matrix
from models.runtime import ModelRuntime
from monitoring.drift.signals import DriftAlarm, DriftConfig, Reference, VersionDrift
from store.engine import put_rows
from store.tables import drift_alarms, drift_references, drift_requests, drift_state

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
    def __init__(self, engine: sa.Engine, reference_of: Callable[[str, str], Reference | None],
                 config: DriftConfig, *, sample: float = 1.0, rebaseline_rows: int = 2000,
                 seed: int = 0) -> None:
        self.engine = engine
        self.reference_of = reference_of
        self.config = config
        self.sample = sample
        self.rebaseline_rows = rebaseline_rows
        self.rng = np.random.default_rng(seed)
        self.versions: dict[Key, VersionDrift | None] = {}
        self._raw: dict[Key, tuple[list[Any], list[Any]]] = {}  # this step's inputs, outputs
        self._errors: dict[Key, list[float]] = {}
        self._cat_index: dict[Key, dict[int, dict[str, int]]] = {}
        self._saved: dict[Key, dict[str, Any]] = {}  # snapshots read at load, by version

    # ------------------------------------------------------------------ state

    def load(self, conn: sa.Connection) -> None:
        self.versions.clear()
        self._raw.clear()
        self._errors.clear()
        self._saved = {(r.model, r.version): orjson.loads(r.doc)
                       for r in conn.execute(sa.select(drift_state))}
        self._adopted = {(r.model, r.version): orjson.loads(r.doc)
                         for r in conn.execute(sa.select(drift_references))}

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
            adopted = getattr(self, "_adopted", {}).get(key)
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

    def flush(self, conn: sa.Connection, now: float) -> list[DriftAlarm]:
        """Run the detectors on what the step gathered; persist state and alarms in ``conn``."""
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
        active = self._active_signals(conn) if alarms else set()
        for a in alarms:
            if (a.model, a.version, a.signal) in active:
                continue  # one open alarm per signal until an operator acknowledges it
            active.add((a.model, a.version, a.signal))
            conn.execute(drift_alarms.insert().values(
                model=a.model, version=a.version, signal=a.signal,
                doc=orjson.dumps(a.to_dict(), option=orjson.OPT_SERIALIZE_NUMPY).decode(),
                ts=a.time))
        for key in changed:
            self._save(conn, key, now)
        return alarms

    def active_signals(self) -> set[tuple[str, str, str]]:
        with self.engine.connect() as conn:
            return self._active_signals(conn)

    def _active_signals(self, conn: sa.Connection) -> set[tuple[str, str, str]]:
        rows = conn.execute(sa.select(drift_alarms.c.model, drift_alarms.c.version,
                                      drift_alarms.c.signal).where(
            drift_alarms.c.acknowledged_at.is_(None))).all()
        return {(r.model, r.version, r.signal) for r in rows}

    def _save(self, conn: sa.Connection, key: Key, now: float) -> None:
        det = self.versions.get(key)
        if det is None:
            return
        doc = orjson.dumps({"snapshot": det.snapshot(), "state": det.state(),
                            "psi": det.feature_psi(), "rows_seen": det.rows_seen,
                            "labels_seen": det.labels_seen,
                            "reference": {"source": det.ref.source, "rows": len(det.ref.rows)},
                            "unmonitored": det.ref.unmonitored,
                            "error_rate_reference": det.error_p0},
                           option=orjson.OPT_SERIALIZE_NUMPY).decode()
        put_rows(conn, drift_state, ("model", "version"), ("doc", "updated_at"),
                 [(*key, doc, now)])

    def process_requests(self, conn: sa.Connection, now: float) -> None:
        """Rebaseline: adopt the last N live rows as the version's reference (the registered
        one stays in the registry), restart its detectors, and close its open alarms."""
        pending = conn.execute(sa.select(drift_requests).where(
            drift_requests.c.done_at.is_(None)).order_by(drift_requests.c.id)).all()
        for req in pending:
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
                doc = orjson.dumps({"rows": rows, "outputs": outs, "source": source},
                                   option=orjson.OPT_SERIALIZE_NUMPY).decode()
                conn.execute(drift_references.delete().where(
                    drift_references.c.model == req.model,
                    drift_references.c.version == req.version))
                conn.execute(drift_references.insert().values(
                    model=req.model, version=req.version, doc=doc, created_at=now))
                self._adopted = {**getattr(self, "_adopted", {}),
                                 key: {"rows": rows, "outputs": outs, "source": source}}
                self._saved.pop(key, None)
                self.versions.pop(key, None)
                self._detector(*key)
                self._save(conn, key, now)
                conn.execute(drift_alarms.update().where(
                    drift_alarms.c.model == req.model, drift_alarms.c.version == req.version,
                    drift_alarms.c.acknowledged_at.is_(None)).values(
                    acknowledged_at=now, acknowledged_by=f"rebaseline:{req.requested_by}"))
                outcome = f"done: {source}"
            conn.execute(drift_requests.update().where(drift_requests.c.id == req.id).values(
                done_at=now, outcome=outcome))


def read_drift(engine: sa.Engine, model: str, version: str,
               alarms_limit: int = 20) -> dict[str, Any]:
    """What ``GET /admin/drift/{model}`` shows for one version."""
    with engine.connect() as conn:
        row = conn.execute(sa.select(drift_state).where(
            drift_state.c.model == model, drift_state.c.version == version)).first()
        alarm_rows = conn.execute(sa.select(drift_alarms).where(
            drift_alarms.c.model == model, drift_alarms.c.version == version).order_by(
            drift_alarms.c.id.desc()).limit(alarms_limit)).all()
        requests = conn.execute(sa.select(drift_requests).where(
            drift_requests.c.model == model, drift_requests.c.version == version).order_by(
            drift_requests.c.id.desc()).limit(5)).all()
    doc = orjson.loads(row.doc) if row else {}
    alarms = []
    for r in alarm_rows:
        a = orjson.loads(r.doc)
        alarms.append({"id": r.id, **a, "active": r.acknowledged_at is None,
                       "acknowledged_at": r.acknowledged_at,
                       "acknowledged_by": r.acknowledged_by})
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
                            for r in requests],
            "updated_at": row.updated_at if row else None}


def acknowledge(engine: sa.Engine, model: str, version: str, actor: str,
                signal: str | None = None, now: float | None = None) -> list[int]:
    """Close the version's open alarms (one signal's, or all); returns their ids."""
    cond = [drift_alarms.c.model == model, drift_alarms.c.version == version,
            drift_alarms.c.acknowledged_at.is_(None)]
    if signal is not None:
        cond.append(drift_alarms.c.signal == signal)
    with engine.begin() as conn:
        ids = [r.id for r in conn.execute(sa.select(drift_alarms.c.id).where(*cond))]
        if ids:
            conn.execute(drift_alarms.update().where(drift_alarms.c.id.in_(ids)).values(
                acknowledged_at=now or time.time(), acknowledged_by=actor))
    return ids


def request_rebaseline(engine: sa.Engine, model: str, version: str, rows: int,
                       actor: str, now: float | None = None) -> int:
    """Queue a rebaseline for the Monitor; returns the request id."""
    with engine.begin() as conn:
        result = conn.execute(drift_requests.insert().values(
            model=model, version=version, action="rebaseline", rows=rows,
            requested_by=actor, ts=now or time.time()))
        return int(result.inserted_primary_key[0])
