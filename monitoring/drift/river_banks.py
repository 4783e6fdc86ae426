"""River's drift detectors behind Vigil's detector interface (``base.Detector``): one River
detector per watched series, each calibrated to its share of the false-alarm budget from the
offline table in ``river_table`` (never a start-up simulation), its state pickled into the
Monitor's snapshot with the River version that wrote it.

River detectors update one value at a time and expose no statistic on a common scale: a
bank's statistic is 1 on the batch a detector alarmed in, else 0, against a threshold of 1.
A bank may watch every ``stride``-th row only (sampling, to stay inside the per-row budget);
its delays grow by that factor, and the bench measures them so.
"""

from __future__ import annotations

import base64
import logging
import math
import pickle
from typing import Any

import numpy as np
import river
from river import drift

from monitoring.drift.river_table import TABLE

log = logging.getLogger("vigil.drift")

# name in config → (constructor, calibrated parameter, fixed arguments, parameter on a log scale)
DETECTORS: dict[str, tuple[Any, str, dict[str, Any], bool]] = {
    "river.ADWIN": (drift.ADWIN, "delta", {}, True),
    "river.PageHinkley": (drift.PageHinkley, "threshold", {"delta": 0.1}, False),
    "river.KSWIN": (drift.KSWIN, "alpha", {"seed": 1}, True),
    # a warm start of 100 errors: after River's 30, a run of 30 hits sets the rate at 0 and
    # the next error is a drift (4% of starts at an error rate of 0.1)
    "river.binary.DDM": (drift.binary.DDM, "drift_threshold", {"warm_start": 100}, False),
    "river.binary.EDDM": (drift.binary.EDDM, "beta", {"alpha": 0.99, "warm_start": 100},
                          False),
    "river.binary.FHDDM": (drift.binary.FHDDM, "confidence_level", {}, True),
    "river.binary.HDDMA": (drift.binary.HDDMA, "drift_confidence", {}, True),
    "river.binary.HDDMW": (drift.binary.HDDMW, "drift_confidence", {}, True),
}
BINARY = tuple(n for n in DETECTORS if n.startswith("river.binary."))
# River 0.26.1's FHDDM alarms when the mean of its input falls (MOA's accuracy stream, though
# its docstring says 1 is an error): it is fed 1 − error, so that more errors alarm
FLIPPED = ("river.binary.FHDDM",)
CONTINUOUS = tuple(n for n in DETECTORS if n not in BINARY)
LIMITS = {"beta": (0.05, 0.999), "drift_threshold": (1.0, 50.0), "threshold": (1.0, 1e4)}


def parameter_for(name: str, rate_per_100k: float) -> float:
    """The parameter value whose false alarms per 100k in-control updates are
    ``rate_per_100k``, interpolated (log rate against the parameter, or its log) in the
    offline table, and extrapolated from its last two points beyond it."""
    _, param, _, log_scale = DETECTORS[name]
    # the measured points, in parameter order from most to fewest alarms; a setting with no
    # alarm in the table bounds nothing and is left out
    points = [(math.log(r), math.log(p) if log_scale else p)
              for p, r in TABLE[name]["rates"] if r > 0]
    points.sort(key=lambda pr: -pr[0])
    target = math.log(rate_per_100k)
    i = 1
    while i < len(points) - 1 and points[i][0] > target:
        i += 1
    (r0, p0), (r1, p1) = points[i - 1], points[i]
    x = p0 + (p1 - p0) * (target - r0) / (r1 - r0) if r1 != r0 else p1
    value = math.exp(x) if log_scale else x
    lo, hi = LIMITS.get(param, (1e-300, 0.5))
    return float(min(max(value, lo), hi))


def build(name: str, value: float) -> Any:
    cls, param, fixed, _ = DETECTORS[name]
    return cls(**{**fixed, param: value})


class RiverBank:
    """One River detector a column; ``update`` returns each column's first alarm in a batch
    as (row, column, statistic), like ``CusumBank``."""

    def __init__(self, name: str, columns: int, arl: float, stride: int = 1) -> None:
        if name not in DETECTORS:
            raise ValueError(f"unknown River detector {name!r}")
        self.name = name
        self.stride = max(int(stride), 1)
        # a detector that sees one row in `stride` spends its budget over that many fewer
        self.value = parameter_for(name, 1e5 * self.stride / arl)
        self.h = np.ones(columns)
        self.k = np.zeros(columns)
        self.s = np.zeros(columns)
        self.first_row: np.ndarray | None = None
        self._phase = 0  # rows seen modulo stride
        self._detectors = [build(name, self.value) for _ in range(columns)]

    def update(self, y: np.ndarray, src: np.ndarray | None = None,
               sign: np.ndarray | None = None) -> list[tuple[int, int, float]]:
        if src is not None:
            y = (sign if sign is not None else 1.0) * y[:, src]
        self.first_row = None
        n = len(y)
        rows = np.arange((-self._phase) % self.stride, n, self.stride)
        self._phase = (self._phase + n) % self.stride
        self.s = np.zeros(len(self._detectors))
        hits: list[tuple[int, int, float]] = []
        picked = 1.0 - y[rows] if self.name in FLIPPED else y[rows]
        for c, det in enumerate(self._detectors):
            for t, v in enumerate(picked[:, c].tolist()):
                det.update(v)
                if det.drift_detected:
                    hits.append((int(rows[t]), c, 1.0))
                    self.s[c] = 1.0
                    for v2 in picked[t + 1:, c].tolist():  # the rest of the batch, unreported
                        det.update(v2)
                    break
        hits.sort()
        if hits:
            self.first_row = self.s.copy()
        return hits

    @property
    def ratio(self) -> np.ndarray:
        return self.s / self.h

    def snapshot(self) -> dict[str, Any]:
        return {"river": river.__version__, "detector": self.name, "value": self.value,
                "phase": self._phase,
                "pickle": base64.b64encode(pickle.dumps(self._detectors)).decode()}

    def restore(self, doc: Any) -> None:
        """Restore a snapshot of the same detector written by the same River version; any
        other (another version, detector or calibration) resets the bank, logged."""
        if not isinstance(doc, dict):
            log.warning("drift state of %s was another detector's: reset", self.name)
            return
        if doc.get("river") != river.__version__ or doc.get("detector") != self.name \
                or doc.get("value") != self.value:
            log.warning("drift state of %s written by River %s (%s, setting %s), running %s "
                        "(setting %s): reset", self.name, doc.get("river"), doc.get("detector"),
                        doc.get("value"), river.__version__, self.value)
            return
        # the pickle is the Monitor's own, read back from its own store
        detectors = pickle.loads(base64.b64decode(doc["pickle"]))  # noqa: S301
        if len(detectors) == len(self._detectors):
            self._detectors = detectors
            self._phase = int(doc.get("phase", 0))
