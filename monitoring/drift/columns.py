"""How each signal's detectors are laid out: the CUSUM columns of the mean and scale banks,
the Bernoulli columns of categories and predicted classes, and a River bank in place of a
signal's CUSUMs when the configuration names one (``DriftConfig.detectors``). Pure."""

from __future__ import annotations

import numpy as np

from monitoring.drift.calibration import (
    bernoulli_kl,
    bernoulli_llr,
    chi2_threshold,
    gaussian_threshold,
    guarded,
    llr_threshold,
)
from monitoring.drift.detectors import CusumBank, CusumGroup
from monitoring.drift.river_banks import RiverBank

MEAN_KS = (0.125, 0.25, 0.5)
SCALE_KS = (0.25, 0.6)  # z² − 1 allowances: variance ×1.5 and ×2.2 (up); down uses the first
SCALE_K = SCALE_KS[0]
SCALE_COLUMNS = [(k, "up", True) for k in SCALE_KS] + [(SCALE_K, "down", False)]
PREDICTED_CLASS_SHIFTS = (0.05, 0.10, 0.15)


def mean_group(signal: str, names: list[str], arl: float) -> CusumGroup:
    """Two-sided CUSUMs on normal scores, one pair a series and allowance; ``arl``: each
    one-sided detector's in-control run length."""
    ks, hs, feats, labels = [], [], [], []
    for k in MEAN_KS:
        h = gaussian_threshold(k, arl)
        for side in ("up", "down"):
            for name in names:
                ks.append(k)
                hs.append(h)
                feats.append(name)
                labels.append(f"mean_{side}@{k:g}")
    m = len(names)  # columns: for each k, every series up, then every series down
    return CusumGroup(signal, CusumBank(np.array(ks), np.array(hs)), feats, labels,
                      src=np.tile(np.arange(m), 2 * len(MEAN_KS)),
                      sign=np.tile(np.repeat([1.0, -1.0], m), len(MEAN_KS)))


def scale_group(names: list[str], arl: float) -> CusumGroup:
    """CUSUMs on z² − 1: variance up (two allowances) and down."""
    ks, hs, feats, labels = [], [], [], []
    for k, side, upper in SCALE_COLUMNS:
        h = chi2_threshold(k, arl, upper)
        for name in names:
            ks.append(k)
            hs.append(h)
            feats.append(name)
            labels.append(f"scale_{side}@{k:g}")
    m = len(names)
    return CusumGroup(
        "input_scale", CusumBank(np.array(ks), np.array(hs)), feats, labels,
        src=np.tile(np.arange(m), len(SCALE_COLUMNS)),
        sign=np.repeat([1.0 if upper else -1.0 for _, _, upper in SCALE_COLUMNS], m))


def river_group(signal: str, name: str, names: list[str], arl: float,
                stride: int = 1) -> CusumGroup:
    """A River detector a series in place of a signal's CUSUMs; ``arl`` a detector's."""
    return CusumGroup(signal, RiverBank(name, len(names), arl, stride),
                      list(names), [name] * len(names))


def bernoulli_columns(p_ref: float, n: int, shifts: tuple[float, ...]
                      ) -> list[tuple[float, float, float, str]]:
    """Two-sided Bernoulli LLR CUSUM columns for a frequency ``p_ref`` estimated on ``n``:
    (a on a hit, b on a miss, KL, label) for each shift and side that fits in (0, 1)."""
    out = []
    for d in shifts:
        for up in (True, False):
            p0 = guarded(p_ref, n, up)
            p1 = p0 + d if up else p0 - d
            if 0 < p1 < 1:
                a, b = bernoulli_llr(p0, p1)
                out.append((a, b, bernoulli_kl(p0, p1), f"{'+' if up else '-'}{d:g}"))
    return out


def class_columns(outputs: np.ndarray, names: list[str]
                  ) -> tuple[list[tuple[int, float, float]], list[float], list[str]]:
    """A classifier's predicted-class frequency columns: (class, a, b), KLs, labels."""
    k = outputs.shape[1]
    cols: list[tuple[int, float, float]] = []
    kls: list[float] = []
    labels: list[str] = []
    freq = np.bincount(outputs.argmax(axis=1), minlength=k) / len(outputs)
    for c in (range(1, 2) if k == 2 else range(k)):  # binary: one class says it all
        if not 0 < freq[c] < 1:
            continue
        for a, b, kl, label in bernoulli_columns(float(freq[c]), len(outputs),
                                                 PREDICTED_CLASS_SHIFTS):
            cols.append((c, a, b))
            kls.append(kl)
            labels.append(f"class {names[c]}:{label}")
    return cols, kls, labels


def llr_group(signal: str, base: CusumGroup, kls: list[float], arl: float, feats: list[str],
              labels: list[str]) -> CusumGroup:
    """``base`` (a mean group) with likelihood-ratio columns after it, each watching its own
    series after the base's."""
    assert base.src is not None and base.sign is not None
    m = int(base.src.max()) + 1
    return CusumGroup(signal, CusumBank(
        np.append(base.bank.k, np.zeros(len(kls))),
        np.append(base.bank.h, [llr_threshold(arl, kl) for kl in kls])),
        [*base.feature, *feats], [*base.label, *labels],
        src=np.append(base.src, m + np.arange(len(kls))),
        sign=np.append(base.sign, np.ones(len(kls))))
