"""Drift detectors: the vectorised statistics equal their definitions, each signal fires on its
own kind of drift and stays quiet on the others, and the calibration matches Siegmund."""

from __future__ import annotations

import numpy as np
import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring.drift.base import DriftConfig, Reference
from monitoring.drift.calibration import gaussian_delay, gaussian_threshold
from monitoring.drift.detectors import CusumBank, NormalScores, PsiBins
from monitoring.drift.signals import VersionDrift

F = 8


def linear(x: np.ndarray) -> np.ndarray:
    w = np.linspace(-1, 1, x.shape[1])
    p = 1 / (1 + np.exp(-(np.nan_to_num(x) @ w) / np.sqrt(x.shape[1])))
    return np.stack([1 - p, p], axis=1)


def detector(seed: int = 0, categorical: bool = False) -> VersionDrift:
    rng = np.random.default_rng(seed)
    rows = rng.normal(size=(5000, F))
    kinds = ["numeric"] * F
    cats: dict[str, list[str]] = {}
    if categorical:
        rows[:, -1] = rng.choice(3, 5000, p=[0.5, 0.3, 0.2])
        kinds[-1] = "category"
        cats = {f"f{F - 1}": ["a", "b", "c", "never"]}
    ref = Reference([f"f{j}" for j in range(F)], kinds, cats, rows, linear(rows),
                    ["no", "yes"])
    return VersionDrift("m", "v1", ref, DriftConfig(error_warmup=300, error_delay=1000), True)


def feed(det: VersionDrift, rows: np.ndarray, batch: int = 250) -> list:
    alarms = []
    for i in range(0, len(rows), batch):
        alarms += det.update_rows(rows[i:i + batch], linear(rows[i:i + batch]), 0.0)
    return alarms


def page(x: np.ndarray, k: np.ndarray, h: np.ndarray, batch: int
         ) -> tuple[list[tuple[int, int]], np.ndarray]:
    """Page's recursion row by row, as the bank runs it: in each batch a column alarms at
    its first crossing, restarts at 0 there, and does not restart again before the batch
    ends, which it ends at most at h. Returns the crossings (row, column) and the end state."""
    s, got = np.zeros(x.shape[1]), []
    for i in range(0, len(x), batch):
        crossed = np.zeros(x.shape[1], dtype=bool)
        for t in range(i, min(i + batch, len(x))):
            s = np.maximum(0.0, s + x[t] - k)
            new = (s > h) & ~crossed
            got += [(t, c) for c in np.nonzero(new)[0]]
            s[new] = 0.0
            crossed |= new
        s = np.minimum(s, h)
    return got, s


@given(st.integers(0, 10_000), st.integers(1, 400))
def test_vectorised_cusum_equals_page_recursion(seed: int, batch: int) -> None:
    rng = np.random.default_rng(seed)
    y = rng.normal(0.2, 1, size=(1200, 3))
    k, h = np.array([0.1, 0.3, 0.6]), np.array([4.0, 6.0, 2.0])
    bank = CusumBank(k, h)
    got = []
    for i in range(0, len(y), batch):
        got += [(i + t, c) for t, c, _ in bank.update(y[i:i + batch])]
    want, s = page(y, k, h, batch)
    assert got and sorted(got) == sorted(want)
    np.testing.assert_allclose(bank.s, s, atol=1e-9)


@given(st.integers(0, 10_000), st.integers(1, 400))
def test_a_bank_sharing_one_sum_per_series_equals_page_recursion(seed: int, batch: int) -> None:
    """The mean bank's form: each series watched up and down with two allowances, from one
    running sum per series (``src``/``sign``), alarming and restarting as Page's recursion."""
    rng = np.random.default_rng(seed)
    x = rng.normal(0.0, 1, size=(1200, 2)) + np.array([0.4, -0.3])
    src, sign = np.array([0, 1, 0, 1, 0, 1, 0, 1]), np.array([1, 1, -1, -1, 1, 1, -1, -1.0])
    k = np.array([0.1, 0.1, 0.1, 0.1, 0.5, 0.5, 0.5, 0.5])
    h = np.array([8.0, 8.0, 8.0, 8.0, 4.0, 4.0, 4.0, 4.0])
    bank = CusumBank(k, h)
    got = []
    for i in range(0, len(x), batch):
        got += [(i + t, c) for t, c, _ in bank.update(x[i:i + batch], src, sign)]
    want, s = page(sign * x[:, src], k, h, batch)
    assert got and sorted(got) == sorted(want)
    np.testing.assert_allclose(bank.s, s, atol=1e-9)


@settings(max_examples=15, deadline=None)
@given(st.integers(0, 10_000), st.sampled_from([300, 1000, 2000]))
def test_a_column_crossing_every_few_rows_alarms_once_a_batch_at_pages_first_crossing(
        seed: int, batch: int) -> None:
    """A stream far off its reference (one row repeated): each column alarms once a batch,
    at the row where Page's recursion from the batch's starting state first crosses, and
    the statistic never ends above h."""
    rng = np.random.default_rng(seed)
    y = np.tile(rng.normal(1.5, 0.5, size=(1, 4)), (6000, 1)) + rng.normal(0, 0.2, (6000, 4))
    k, h = np.full(4, 0.25), np.full(4, 6.0)
    bank = CusumBank(k, h)
    for i in range(0, len(y), batch):
        s0 = bank.s.copy()
        got = bank.update(y[i:i + batch])
        assert (np.bincount([c for _, c, _ in got], minlength=4) == 1).all()
        assert (bank.s <= h).all()
        s, first = s0, {}
        for t in range(batch):  # Page's recursion from the batch's starting state
            s = np.maximum(0.0, s + y[i + t] - k)
            for c in range(4):
                if s[c] > h[c] and c not in first:
                    first[c] = t
        assert {c: t for t, c, _ in got} == first


@settings(max_examples=30, deadline=None)
@given(st.integers(0, 10_000), st.integers(20, 600))
def test_a_column_that_crossed_ends_its_batch_at_pages_value_or_at_most_h_above(
        seed: int, batch: int) -> None:
    """Where Page's recursion (restarting at every crossing) would not cross again after a
    column's first crossing of a batch, the bank's end state is Page's exactly; where it
    would, it is above Page's and never above h."""
    rng = np.random.default_rng(seed)
    y = rng.normal(0.3, 1, size=(3000, 5))
    k, h = np.full(5, 0.25), np.array([2.0, 3.0, 4.0, 6.0, 8.0])
    bank = CusumBank(k, h)
    s = np.zeros(5)
    for i in range(0, len(y), batch):
        bank.s = s.copy()  # the same starting state for both
        bank.update(y[i:i + batch])
        crossings = np.zeros(5, dtype=int)
        for t in range(i, min(i + batch, len(y))):
            s = np.maximum(0.0, s + y[t] - k)
            crossed = s > h
            crossings += crossed
            s[crossed] = 0.0
        again = crossings > 1
        np.testing.assert_allclose(bank.s[~again], s[~again], atol=1e-9)
        assert (bank.s[again] >= s[again] - 1e-9).all() and (bank.s <= h + 1e-9).all()


def test_normal_scores_of_reference_draws_are_standard_normal() -> None:
    rng = np.random.default_rng(1)
    skewed = np.column_stack([rng.lognormal(size=20_000), rng.exponential(size=20_000),
                              rng.integers(0, 4, 20_000).astype(float)])
    ns = NormalScores(skewed[:10_000])
    z = ns.transform(skewed[10_000:])
    assert np.abs(z.mean(axis=0)).max() < 0.05
    assert np.abs(z.std(axis=0) - 1).max() < 0.05
    # for the continuous columns the scores are Gaussian: z² has mean 1, like χ²₁
    assert np.abs((z[:, :2] ** 2).mean(axis=0) - 1).max() < 0.06


def psi_by_definition(live: np.ndarray, ref: np.ndarray, categories: int | None) -> float:
    """One feature's PSI as written down: reference decile edges (or categories), live and
    reference shares per bin floored at 1e-4, Σ (p − q)·ln(p / q)."""
    ref, live = ref[np.isfinite(ref)], live[np.isfinite(live)]
    if categories is None:
        edges = np.unique(np.quantile(ref, np.linspace(0, 1, 11))[1:-1])
        lb, rb, k = (np.searchsorted(edges, live, side="right"),
                     np.searchsorted(edges, ref, side="right"), len(edges) + 1)
    else:
        lb, rb, k = live.astype(int), ref.astype(int), categories
    lc = np.bincount(lb[lb < k], minlength=k)[:k]
    p = np.maximum(lc / lc.sum(), 1e-4)
    q = np.maximum(np.bincount(rb, minlength=k)[:k] / len(ref), 1e-4)
    return float(((p - q) * np.log(p / q)).sum())


@settings(max_examples=40, deadline=None)
@given(st.integers(0, 2**32 - 1), st.integers(1, 400), st.floats(-1.0, 1.0))
def test_psi_bins_equal_the_definition_feature_by_feature(seed: int, n: int,
                                                          shift: float) -> None:
    """Binned once on arrival and counted in one pass: the same PSI as each feature computed
    on its own, with nulls, ±inf, tied reference values, few distinct values, an unknown
    category code and a category the reference never had."""
    rng = np.random.default_rng(seed)
    ref = np.column_stack([rng.normal(size=3000), rng.integers(0, 3, 3000).astype(float),
                           np.round(rng.exponential(size=3000), 1),
                           rng.choice([0.0, 1.0], 3000, p=[0.9, 0.1]),
                           rng.choice(3, 3000, p=[0.6, 0.4, 0.0]).astype(float)])
    ref[rng.random(ref.shape) < 0.05] = np.nan
    live = ref[rng.integers(0, 3000, n)] + np.array([shift, 0.0, shift, 0.0, 0.0])
    live[:, 4] = rng.integers(0, 5, n)  # codes 3 and 4 are not categories: no bin
    live[rng.random(live.shape) < 0.1] = np.nan
    live[rng.random(live.shape) < 0.02] = np.inf
    categories = [None, 3, None, None, 4]
    bins = PsiBins(ref, categories)
    got = bins.psi(bins.bin(live))
    for j, cats in enumerate(categories):
        col = live[:, j]
        if cats is not None:
            col = np.where(col < cats, col, np.nan)
        if not np.isfinite(col).any():
            assert np.isnan(got[j])
        else:
            assert got[j] == pytest.approx(psi_by_definition(col, ref[:, j], cats), abs=1e-9)
    assert np.isnan(PsiBins(np.full((10, 1), np.nan), [None]).psi(np.zeros((3, 1), int))[0])


def test_calibration_reproduces_siegmund() -> None:
    # REFERENCE: k = 0.125, h = 34 predicted 248 / 39 rows at 0.25σ / 1σ
    assert gaussian_delay(0.125, 34, 0.25) == pytest.approx(248, abs=2)
    assert gaussian_delay(0.125, 34, 1.0) == pytest.approx(39, abs=1)
    h1, h2 = gaussian_threshold(0.125, 1e6), gaussian_threshold(0.125, 2e6)
    assert 0 < h1 < h2  # a larger run length needs a higher threshold
    assert h2 - h1 == pytest.approx(np.log(2) / 0.25, rel=0.01)


def test_quiet_without_drift_and_each_signal_on_its_own_drift() -> None:
    rng = np.random.default_rng(7)
    det = detector(7)
    assert feed(det, rng.normal(size=(20_000, F))) == []  # no false alarm in 20k rows

    shifted = rng.normal(size=(3000, F))
    shifted[:, 2] += 1.0
    alarms = feed(detector(7), shifted)
    first = {a.signal: a for a in reversed(alarms)}
    assert "input_mean" in first and first["input_mean"].features[0]["feature"] == "f2"
    assert "input_scale" not in first or first["input_scale"].rows > first["input_mean"].rows

    wider = rng.normal(size=(3000, F))
    wider[:, 5] *= 1.5  # variance ×2.25, mean unchanged
    alarms = feed(detector(7), wider)
    scale = [a for a in alarms if a.signal == "input_scale"]
    assert scale and scale[0].features[0]["feature"] == "f5"
    # wider tails also push a mean CUSUM up eventually, but the scale detector is first
    mean = [a for a in alarms if a.signal == "input_mean"]
    assert not mean or mean[0].rows > scale[0].rows


def test_categories_shift_and_an_unseen_category_alarms_at_first_sight() -> None:
    rng = np.random.default_rng(3)
    det = detector(3, categorical=True)
    rows = rng.normal(size=(4000, F))
    rows[:, -1] = rng.choice(3, 4000, p=[0.5, 0.3, 0.2])
    assert feed(det, rows) == []
    rows[:, -1] = rng.choice(3, 4000, p=[0.35, 0.3, 0.35])
    alarms = feed(det, rows)
    assert [a.signal for a in alarms][:1] == ["input_category"]
    rows = rng.normal(size=(50, F))
    rows[:, -1] = 0
    rows[17, -1] = 3  # "never": in the card, not in the reference
    unseen = [a for a in feed(det, rows, batch=50) if a.signal == "input_unseen"]
    assert len(unseen) == 1 and unseen[0].features[0]["category"] == "never"
    assert unseen[0].rows == 8000 + 18


def test_error_stream_alarms_on_a_higher_error_rate_only() -> None:
    rng = np.random.default_rng(5)
    det = detector(5)
    quiet = (rng.random(20_000) < 0.1).astype(float)
    assert [a for i in range(0, 20_000, 500)
            for a in det.update_errors(quiet[i:i + 500], 0.0)] == []
    worse = (rng.random(3000) < 0.25).astype(float)
    alarms = [a for i in range(0, 3000, 500) for a in det.update_errors(worse[i:i + 500], 0.0)]
    assert alarms and alarms[0].signal == "error" and 20_000 < alarms[0].rows <= 23_000


def test_prediction_drift_without_input_drift_of_any_single_feature() -> None:
    rng = np.random.default_rng(9)
    det = detector(9)
    rows = rng.normal(size=(4000, F))
    feed(det, rows[:2000])
    # shift every feature by a little in the model's direction: each alone is small
    rows[2000:] += np.linspace(-1, 1, F) * 0.25
    alarms = feed(det, rows[2000:])
    assert "prediction" in {a.signal for a in alarms}


def test_snapshot_restore_continues_where_it_stopped() -> None:
    rng = np.random.default_rng(11)
    rows = rng.normal(size=(3000, F))
    rows[1000:, 4] += 0.5
    whole = detector(11)
    a_whole = feed(whole, rows)
    first, second = detector(11), detector(11)
    feed(first, rows[:1500])
    second.restore(orjson.loads(orjson.dumps(first.snapshot())))
    second.window, second.window_out = first.window, first.window_out
    a_split = [a for a in feed(first, rows[:0])] + feed(second, rows[1500:])
    assert [(a.signal, a.rows) for a in a_whole if a.rows > 1500] == \
        [(a.signal, a.rows) for a in a_split]


def test_psi_follows_the_live_window_as_rows_arrive() -> None:
    """PSI is cached per batch of rows: the next batch must show in it."""
    rng = np.random.default_rng(12)
    det = detector(12)
    feed(det, rng.normal(size=(1000, F)))
    before = det.feature_psi()
    shifted = rng.normal(size=(1000, F))
    shifted[:, 2] += 2.0
    feed(det, shifted)
    after = det.feature_psi()
    assert after["f2"] > before["f2"] + 0.5
    det._psi = None  # computed afresh from the window: the same numbers
    assert det.feature_psi() == after


def test_state_names_each_signals_closest_features() -> None:
    """``state`` (saved with every step, shown by the admin API): per signal, each feature's
    closest detector as S / h, the ten closest features (ties in card order) and the max."""
    rng = np.random.default_rng(21)
    det = detector(21, categorical=True)
    rows = rng.normal(size=(600, F))
    rows[:, -1] = rng.choice(3, 600, p=[0.2, 0.3, 0.5])
    rows[:, 2] += 0.4
    feed(det, rows)
    state = det.state()
    assert set(state) == set(det.groups)
    for signal, g in det.groups.items():
        closest: dict[str, float] = {}
        for name, s, h in zip(g.feature, g.bank.s, g.bank.h, strict=True):
            closest[name] = max(closest.get(name, 0.0), float(s / h))
        ranked = sorted(closest.items(), key=lambda kv: -kv[1])[:10]
        assert state[signal]["features"] == {k: round(v, 4) for k, v in ranked}
        assert list(state[signal]["features"]) == [k for k, _ in ranked]
        assert state[signal]["max_ratio"] == round(max(closest.values()), 4)
    assert max(state["input_mean"]["features"], key=state["input_mean"]["features"].get) == "f2"
