"""The joint signal (``input_joint``): its row score equals the Mahalanobis distance computed
directly, it fires on a correlation that flips with unchanged marginals and names the pair,
it stays quiet on clean rows, and its pairs survive a snapshot."""

from __future__ import annotations

import numpy as np
import orjson

from monitoring.drift.base import DriftConfig, Reference
from monitoring.drift.joint import JointScores, Mahalanobis
from monitoring.drift.signals import VersionDrift

F = 8


def correlated(rng: np.random.Generator, n: int, rho: float) -> np.ndarray:
    x = rng.normal(size=(n, F))
    x[:, 1] = rho * x[:, 0] + np.sqrt(1 - rho * rho) * x[:, 1]
    return x


def detector(rng: np.random.Generator, config: DriftConfig | None = None) -> VersionDrift:
    rows = correlated(rng, 5000, 0.8)
    out = np.tile([0.5, 0.5], (len(rows), 1))
    ref = Reference([f"f{j}" for j in range(F)], ["numeric"] * F, {}, rows, out, ["a", "b"])
    return VersionDrift("m", "v1", ref, config or DriftConfig(), True)


def feed(det: VersionDrift, rows: np.ndarray) -> list:
    alarms = []
    for i in range(0, len(rows), 250):
        chunk = rows[i:i + 250]
        alarms += det.update_rows(chunk, np.tile([0.5, 0.5], (len(chunk), 1)), 0.0)
    return alarms


def test_row_score_is_the_mahalanobis_distance_against_the_shrunk_correlation() -> None:
    rng = np.random.default_rng(1)
    z = correlated(rng, 2000, 0.6)
    live = rng.normal(size=(50, F))
    n, d = z.shape
    shrink = min(0.5, d / (4 * n)) + 1e-3
    corr = (1 - shrink) * np.corrcoef(z, rowvar=False) + shrink * np.eye(d)
    expected = np.einsum("ij,jk,ik->i", live, np.linalg.inv(corr), live)
    np.testing.assert_allclose(Mahalanobis(z).score(live), expected, rtol=1e-9)


def test_reference_rows_get_standard_normal_scores() -> None:
    rng = np.random.default_rng(2)
    scores = JointScores(correlated(rng, 5000, 0.8))
    y = scores.transform(correlated(rng, 5000, 0.8))[:, 0]
    assert abs(y.mean()) < 0.1 and abs(y.std() - 1) < 0.1


def test_a_correlation_flip_with_unchanged_marginals_alarms_and_names_the_pair() -> None:
    rng = np.random.default_rng(3)
    det = detector(rng)
    live = np.concatenate([correlated(rng, 2000, 0.8), correlated(rng, 2000, -0.8)])
    alarms = feed(det, live)
    joint = [a for a in alarms if a.signal == "input_joint"]
    assert joint and 2000 < joint[0].rows <= 2300
    top = joint[0].features[0]
    assert top["feature"] == "f0~f1" and top["pair"] == ["f0", "f1"]
    assert top["corr_reference"] > 0.7 and top["corr_live"] < top["corr_reference"] - 0.5
    assert not [a for a in alarms if a.signal in ("input_mean", "input_scale")
                and a.rows < 2300]  # the marginals did not move
    state = det.state()["input_joint"]
    assert state["pairs"][0]["feature"] == "f0~f1" and state["detector"] == "mahalanobis"
    again = detector(np.random.default_rng(3))
    again.restore(orjson.loads(orjson.dumps(det.snapshot())))
    assert again.state()["input_joint"]["pairs"] == state["pairs"]


def test_quiet_on_twenty_thousand_clean_rows() -> None:
    rng = np.random.default_rng(4)
    det = detector(rng)
    assert feed(det, correlated(rng, 20_000, 0.8)) == []


def test_a_river_anomaly_scorer_can_score_the_rows_instead() -> None:
    rng = np.random.default_rng(5)
    det = detector(rng, DriftConfig(detectors={"input_joint": "river.HalfSpaceTrees"}))
    assert det.joint is not None and det.joint.scores.method == "river.HalfSpaceTrees"
    live = np.concatenate([correlated(rng, 1000, 0.8), 3 * correlated(rng, 1000, 0.8)])
    joint = [a for a in feed(det, live) if a.signal == "input_joint"]
    assert joint and 1000 < joint[0].rows < 1100  # rows far out: the scorer sees them
