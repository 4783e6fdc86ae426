"""What a version's drift signals compare against (``Reference``), how they are set
(``DriftConfig``), what they raise (``DriftAlarm``) and the one interface every detector bank
has (``Detector``: Vigil's CUSUM banks and River's detectors behind it). Pure values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import numpy as np


@dataclass
class DriftAlarm:
    model: str
    version: str
    signal: str
    features: list[dict[str, Any]]  # ranked: {"feature", "ratio" (S/h), "shift", "psi"?}
    score: float  # the statistic over its threshold (≥ 1 when raised)
    rows: int  # rows (or labels, for "error") seen since the reference
    time: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Reference:
    """What a version's detectors compare against."""

    features: list[str]
    kinds: list[str]  # per feature: "numeric" or "category"
    categories: dict[str, list[str]]  # categorical feature -> its categories (card order)
    rows: np.ndarray  # reference input matrix (card order; categories as indices)
    outputs: np.ndarray  # reference prediction scores (n, outputs)
    output_names: list[str]
    source: str = "registry"
    # inputs without a drift signal, and why: personal data the log drops or hashes
    unmonitored: dict[str, str] = field(default_factory=dict)


@dataclass
class DriftConfig:
    false_alarms_per_100k: float = 1.0
    window: int = 1000  # rows behind the per-feature PSI score
    keep: int = 2000  # recent live rows kept for a rebaseline
    error_warmup: int = 1000  # labels that set the first reference error rate
    error_delay: int = 5000  # labels join the reference error rate this many labels later
    category_shifts: tuple[float, ...] = (0.05, 0.10)  # absolute frequency changes watched
    error_shifts: tuple[float, ...] = (0.05, 0.10)
    # per signal: "cusum" (Vigil's banks), a River detector ("river.ADWIN",
    # "river.binary.HDDMW", ...) or, for input_joint, "mahalanobis" or a River anomaly scorer
    detectors: dict[str, str] = field(default_factory=dict)
    river_stride: int = 1  # River detectors on inputs and predictions see every n-th row


class Detector(Protocol):
    """A bank of detectors, one a column, over batches of rows.

    ``update`` observes a (rows, columns) batch (or series mapped to columns by ``src`` and
    ``sign``) and returns each column's first alarm in it as (row, column, statistic);
    ``s`` / ``h`` is each column's statistic over its threshold (an alarm at 1);
    ``first_row`` those statistics at the batch's first alarm; ``snapshot`` a JSON-able
    state that ``restore`` takes back (refusing, with a reset, one it cannot trust)."""

    s: np.ndarray
    h: np.ndarray
    k: np.ndarray  # each column's allowance (CUSUM; 0 where the detector has none)
    first_row: np.ndarray | None

    def update(self, y: np.ndarray, src: np.ndarray | None = None,
               sign: np.ndarray | None = None) -> list[tuple[int, int, float]]: ...

    def snapshot(self) -> Any: ...

    def restore(self, doc: Any) -> None: ...
