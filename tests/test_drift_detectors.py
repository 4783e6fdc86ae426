"""The contract every detector bank keeps (``monitoring.drift.base.Detector``), checked over
Vigil's CUSUM bank and each of River's detectors, as River's own ``test_estimators`` runs
its checks over every estimator: batches in, first alarms out in row order, one at most a
column; quiet in control over a seeded stream, an alarm after a large change; a snapshot
that survives JSON and continues exactly; a snapshot of another River version refused with
a reset."""

from __future__ import annotations

import logging

import numpy as np
import orjson
import pytest

from monitoring.drift.base import Detector, DriftConfig, Reference
from monitoring.drift.calibration import gaussian_threshold
from monitoring.drift.detectors import CusumBank
from monitoring.drift.river_banks import BINARY, DETECTORS, RiverBank, parameter_for
from monitoring.drift.signals import VersionDrift

ARL = 1e6  # one detector's in-control run length
NAMES = ["cusum", *DETECTORS]
COLUMNS = 2


def bank(name: str, arl: float = ARL) -> Detector:
    if name == "cusum":
        return CusumBank(np.full(COLUMNS, 0.5), np.full(COLUMNS, gaussian_threshold(0.5, arl)))
    return RiverBank(name, COLUMNS, arl)


def rows(name: str, n: int, seed: int, shift: float = 0.0) -> np.ndarray:
    """In control (``shift`` 0) what the Monitor feeds the bank: normal scores, or 0/1
    errors at 0.1 for a binary detector; ``shift`` moves column 1 (a rate, for errors) in
    the second half of the rows."""
    rng = np.random.default_rng(seed)
    half = n // 2
    if name in BINARY:
        y = (rng.random((n, COLUMNS)) < 0.1).astype(float)
        y[half:, 1] = rng.random(n - half) < 0.1 + shift
        return y
    y = rng.normal(size=(n, COLUMNS))
    y[half:, 1] += shift
    return y


def size(name: str) -> int:
    return 600 if name == "river.KSWIN" else 4000  # KSWIN: ~300 µs an update


@pytest.mark.parametrize("name", NAMES)
def test_alarms_are_first_crossings_in_row_order_one_a_column(name: str) -> None:
    det = bank(name, arl=1e5)
    assert det.update(np.empty((0, COLUMNS))) == []
    det.update(rows(name, 1000, 99))  # a warm-up, as the Monitor gives (see below)
    det.update(rows(name, size(name) // 2, 98))  # in control: any alarm here is not the test's
    shifted = rows(name, 2 * size(name), 1, shift=3.0 if name not in BINARY else 0.6)
    hits = det.update(shifted[size(name):])  # the shifted half: column 1 moved from its start
    assert hits, "a large change must alarm"
    assert [h[0] for h in hits] == sorted(h[0] for h in hits)
    assert len({h[1] for h in hits}) == len(hits)
    assert all(0 <= r < size(name) and 0 <= c < COLUMNS for r, c, _ in hits)
    assert 1 in {c for _, c, _ in hits}
    assert det.s.shape == det.h.shape == det.k.shape == (COLUMNS,)
    assert (det.h > 0).all()
    assert det.first_row is not None


@pytest.mark.parametrize("name", NAMES)
def test_quiet_in_control_after_a_warm_up(name: str) -> None:
    """River's binary detectors judge the error rate against their own first updates and
    can alarm among them (DDM: 3 starts in 20 of the table's); the Monitor warms them up on
    the labels that set the CUSUMs' reference rate (``error_warmup``), as here."""
    det = bank(name)
    det.update(rows(name, 1000, 99))
    n = size(name)
    for seed in range(3):
        assert det.update(rows(name, n, 10 + seed)) == []


@pytest.mark.parametrize("name", NAMES)
def test_snapshot_survives_json_and_continues_exactly(name: str) -> None:
    n = size(name) // 2
    shift = 1.0 if name not in BINARY else 0.3
    first, whole = bank(name), bank(name)
    before, after = rows(name, n, 3), rows(name, n, 4, shift)
    whole.update(before)
    first.update(before)
    second = bank(name)
    second.restore(orjson.loads(orjson.dumps(first.snapshot())))
    assert second.update(after) == whole.update(after)
    assert np.array_equal(second.s, whole.s)


@pytest.mark.parametrize("name", [n for n in NAMES if n != "cusum"])
def test_a_snapshot_of_another_river_version_is_refused_with_a_reset(
        name: str, caplog: pytest.LogCaptureFixture) -> None:
    used, fresh, reference = bank(name), bank(name), bank(name)
    used.update(rows(name, size(name) // 2, 5, 1.0 if name not in BINARY else 0.3))
    doc = used.snapshot()
    doc["river"] = "0.0.1"
    with caplog.at_level(logging.WARNING, logger="vigil.drift"):
        fresh.restore(doc)
    assert "River 0.0.1" in caplog.text and "reset" in caplog.text
    later = rows(name, size(name) // 2, 6)
    assert fresh.update(later) == reference.update(later)


def test_a_cusum_snapshot_restores_only_into_a_bank_of_its_width() -> None:
    det = bank("cusum")
    det.restore([1.0, 2.0, 3.0])
    assert det.s.tolist() == [0.0, 0.0]
    det.restore([1.0, 2.0])
    assert det.s.tolist() == [1.0, 2.0]


@pytest.mark.parametrize("name", list(DETECTORS))
def test_fewer_false_alarms_asked_means_a_stricter_setting(name: str) -> None:
    """The offline table is interpolated monotonically: a longer run length never gives a
    setting that alarms more."""
    loose, strict = parameter_for(name, 10.0), parameter_for(name, 0.01)
    _, param, _, _ = DETECTORS[name]
    more_strict_when_lower = param != "threshold" and param != "drift_threshold"
    assert (strict <= loose) if more_strict_when_lower else (strict >= loose)


@pytest.mark.parametrize("signal,name", [("input_mean", "river.ADWIN"),
                                         ("prediction", "river.PageHinkley"),
                                         ("error", "river.binary.HDDMW")])
def test_a_signal_runs_the_river_detector_configured_for_it(signal: str, name: str) -> None:
    rng = np.random.default_rng(7)
    ref_rows = rng.normal(size=(3000, 4))
    out = np.stack([np.full(3000, 0.5), np.full(3000, 0.5)], axis=1)
    ref = Reference([f"f{j}" for j in range(4)], ["numeric"] * 4, {}, ref_rows, out,
                    ["a", "b"])
    det = VersionDrift("m", "v", ref, DriftConfig(detectors={signal: name}, error_warmup=200),
                       True)
    assert isinstance(det.groups[signal].bank, RiverBank)
    assert det.state()[signal]["detector"] == name
    live = rng.normal(size=(3000, 4))
    live[1000:, 2] += 2.0
    outs = np.column_stack([np.full(3000, 0.5), np.full(3000, 0.5)])
    outs[1000:] = [0.1, 0.9]
    alarms = det.update_rows(live, outs, 0.0)
    errors = np.concatenate([rng.random(1500) < 0.1, rng.random(1500) < 0.5]).astype(float)
    alarms += det.update_errors(errors, 0.0)
    hit = [a for a in alarms if a.signal == signal]
    assert hit and hit[0].rows > (1000 if signal != "error" else 1500)
    restored = VersionDrift("m", "v", ref, DriftConfig(detectors={signal: name}), True)
    restored.restore(orjson.loads(orjson.dumps(det.snapshot())))
    assert isinstance(restored.groups[signal].bank, RiverBank)
