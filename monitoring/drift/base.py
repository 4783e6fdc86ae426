"""What a version's drift signals compare against (``Reference``), how they are set
(``DriftConfig``) and what they raise (``DriftAlarm``). Pure values."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

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
