"""Business KPI outcomes from ``/feedback`` (``"kpis": {"conversion": 1}``), joined per request
to the answer that served it, in the Monitor's transaction: the request's champion, canary,
experiment or explicit answer (never a shadow's: a shadow served nobody). The first outcome of
a (request, KPI) counts; a repeat is a duplicate. An outcome that arrives before its
prediction was read waits in the store, like a label, for ``pending_seconds``."""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson
import pandas as pd

from store import PredictionIndex, Transaction
from store.kpis import KpiStore, KpiSums, StatKey

log = logging.getLogger("vigil.kpis")


class KpiJoin:
    def __init__(self, store: KpiStore, index: PredictionIndex,
                 pending_seconds: float = 600.0) -> None:
        self.store = store
        self.index = index
        self.pending_seconds = pending_seconds
        self.counts: dict[str, int] = {}  # outcome -> n, since the start (for the logs)
        # with several replicas: whether this Monitor owns a model's log partition (only the
        # owner has read its predictions, so only it may join or give up its waiting outcomes)
        self.owns: Callable[[str], bool] | None = None
        self._held = True  # whether outcomes may be waiting (checked at the start)

    def _served(self, tx: Transaction, request_ids: Sequence[str]
                ) -> dict[tuple[str, str], tuple[str, str]]:
        """(request id, model) -> (version, variant) of the answer that served it."""
        found: dict[tuple[str, str], tuple[str, str]] = {}
        for a in self.index.answers(tx, sorted(set(request_ids))):
            if a.variant != "shadow":  # oldest first: a reused id counts its latest answer
                found[(a.request_id, a.model)] = (a.version, a.variant)
        return found

    def join(self, tx: Transaction, feedback: Sequence[tuple[dict[str, Any], float]],
             now: float, caught_up: bool) -> None:
        """Record the step's outcomes and retry the waiting ones; sums go to ``kpi_stats``."""
        items = [(d, ts) for d, ts in feedback if d.get("kpis")]
        sums: dict[StatKey, list[float]] = {}

        def add(model: str, version: str, variant: str, kpi: str, value: float) -> None:
            s = sums.setdefault((model, version, variant, kpi), [0.0, 0.0, 0.0])
            s[0] += 1
            s[1] += value
            s[2] += value * value

        if items:
            served = self._served(tx, [str(d.get("request_id")) for d, _ in items])
            keys = [(str(d.get("request_id")), str(d.get("model")), k)
                    for d, _ in items for k in d["kpis"]]
            seen = self.store.known(tx, keys)
            rows = []
            for d, ts in items:
                rid, model = str(d.get("request_id")), str(d.get("model"))
                label = d.get("label", d.get("value"))
                label_json = None if label is None else orjson.dumps(label).decode()
                hit = served.get((rid, model))
                for kpi, value in d["kpis"].items():
                    if (rid, model, kpi) in seen:
                        self._count("duplicate")
                        continue
                    seen.add((rid, model, kpi))
                    version, variant = hit if hit else (None, None)
                    rows.append((rid, model, kpi, float(value), version, variant, label_json, ts))
                    if hit:
                        add(model, hit[0], hit[1], kpi, float(value))
                    self._count("joined" if hit else "pending")
            self._held = self._held or any(r[4] is None for r in rows)
            self.store.record(tx, rows)
        if self._held:
            self._retry(tx, now, caught_up, add)
        self.store.add(tx, {k: KpiSums(*v) for k, v in sums.items()}, now)

    def _retry(self, tx: Transaction, now: float, caught_up: bool, add: Any) -> None:
        held = [h for h in self.store.held(tx) if self.owns is None or self.owns(h.model)]
        if not held:
            self._held = False
            return
        served = self._served(tx, [h.request_id for h in held])
        joined, dropped = [], []
        for h in held:
            hit = served.get((h.request_id, h.model))
            if hit is not None:
                joined.append((h.id, *hit))
            elif caught_up and now - h.ts >= self.pending_seconds:
                dropped.append(h.id)
                self._count("unmatched")
        done = self.store.attach(tx, joined)
        for h in held:
            hit = served.get((h.request_id, h.model))
            if hit is not None and h.id in done:
                add(h.model, hit[0], hit[1], h.kpi, h.value)
                self._count("joined")
        self.store.drop(tx, dropped)

    def _count(self, outcome: str) -> None:
        self.counts[outcome] = self.counts.get(outcome, 0) + 1


def summarize(n: float, total: float, total_sq: float) -> dict[str, float]:
    """What the API and the metrics show of a KPI's sums: count, sum, sum of squares, mean."""
    mean = total / n if n else 0.0
    return {"count": n, "sum": total, "sum_squares": total_sq, "mean": mean}


def read_kpis(store: KpiStore, model: str) -> dict[str, dict[str, dict[str, dict[str, float]]]]:
    """version -> variant -> KPI -> its summary, for ``GET /admin/models/{m}/stats``."""
    out: dict[str, dict[str, dict[str, dict[str, float]]]] = {}
    for (_, version, variant, kpi), s in sorted(store.sums(model).items()):
        out.setdefault(version, {}).setdefault(variant, {})[kpi] = summarize(
            s.n, s.total, s.total_sq)
    return out


def export_outcomes(store: KpiStore, model: str, out: Path, since: float = 0.0) -> int:
    """Write the joined outcomes of ``model`` to Parquet for analysts, one row per request:
    ``request_id``, ``time`` (UTC, when the first outcome came), ``model``, ``version``,
    ``variant``, ``label`` (JSON, when one came with an outcome) and a ``kpi.<name>`` column
    per KPI. Returns the row count."""
    rows: dict[str, dict[str, Any]] = {}
    for o in store.outcomes(model, since):
        r = rows.setdefault(o["request_id"], {
            "request_id": o["request_id"], "time": o["ts"], "model": model,
            "version": o["version"], "variant": o["variant"], "label": o["label"]})
        r["time"] = min(r["time"], o["ts"])
        r["label"] = r["label"] or o["label"]
        r[f"kpi.{o['kpi']}"] = o["value"]
    frame = pd.DataFrame(list(rows.values()), columns=None if rows else [
        "request_id", "time", "model", "version", "variant", "label"])
    frame["time"] = pd.to_datetime(frame["time"], unit="s", utc=True)
    frame.to_parquet(out, index=False)
    return len(frame)
