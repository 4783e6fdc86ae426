"""The Monitor's per-minute history (store.history): cumulative rows in, per-minute figures
out; latency quantiles from the history's buckets against numpy on seeded data."""

from __future__ import annotations

import numpy as np
import pytest

from monitoring.quality.history import record_minute, totals
from monitoring.quality.stats import VersionStats
from store import history, transaction

T0 = 1_800_000_000.0 - 1_800_000_000.0 % 60  # a minute's start


def stats_with(latencies: list[float], errors: int = 0) -> VersionStats:
    s = VersionStats(["a", "b"], 100)
    for i, x in enumerate(latencies):
        s.add_prediction({"rows": 1, "latency_seconds": x,
                          "status": "error" if i < errors else "ok"}, T0)
    return s


def test_minutes_are_differences_of_the_cumulative_rows(engine) -> None:  # type: ignore[no-untyped-def]
    key = ("m", "v1", "champion")
    s = stats_with([0.01] * 10, errors=1)
    with transaction(engine) as tx:
        record_minute(tx, T0 + 5, {key: s}, {key})
        for _ in range(5):
            s.add_prediction({"rows": 2, "latency_seconds": 0.01}, T0)
        record_minute(tx, T0 + 30, {key: s}, {key})  # same minute: the row is overwritten
        for _ in range(20):
            s.add_prediction({"rows": 1, "latency_seconds": 0.2}, T0 + 60)
        record_minute(tx, T0 + 61, {key: s}, {key})
    doc = history.read(engine, "m", 60, T0 + 90)
    (series,) = doc["series"]
    assert (series["version"], series["variant"]) == ("v1", "champion")
    first, second = series["points"]
    assert (first["t"], first["requests"], first["errors"], first["rows"]) == (T0, 15, 1, 20)
    assert (second["t"], second["requests"], second["errors"], second["rows"]) == (
        T0 + 60, 20, 0, 20)
    assert first["p99"] == pytest.approx(0.01, rel=0.5)
    assert second["p50"] == pytest.approx(0.2, rel=0.5)
    assert series["window"]["requests"] == 35
    # a later window starts from the row before it
    (later,) = history.read(engine, "m", 1, T0 + 90)["series"]
    assert [p["requests"] for p in later["points"]] == [20]
    assert history.read(engine, "other", 60, T0)["series"] == []


def test_rows_older_than_the_retention_go(engine) -> None:  # type: ignore[no-untyped-def]
    key = ("m", "v1", "champion")
    s = stats_with([0.01])
    with transaction(engine) as tx:
        record_minute(tx, T0, {key: s}, {key})
        record_minute(tx, T0 + 60 * (history.RETENTION_MINUTES + 2), {key: s}, {key})
    doc = history.read(engine, "m", history.RETENTION_MINUTES + 10,
                       T0 + 60 * (history.RETENTION_MINUTES + 2))
    assert len(doc["series"][0]["points"]) == 1


def test_quantiles_from_the_buckets_match_numpy() -> None:
    rng = np.random.default_rng(5)
    latencies = rng.lognormal(np.log(0.02), 0.8, 5000)
    (t,) = totals({("m", "v", "champion"): stats_with(list(latencies))},
                  [("m", "v", "champion")])
    assert t.latency_le[-1] == 5000
    assert list(t.latency_le) == sorted(t.latency_le)
    for q in (0.5, 0.9, 0.99):
        got = history.quantile(t.latency_le, q)
        # one bucket is 1.5x wide: interpolated, the error stays well inside it
        assert got == pytest.approx(np.quantile(latencies, q), rel=0.2), q


def test_docstring_examples() -> None:
    import doctest

    result = doctest.testmod(history)
    assert result.attempted > 0 and result.failed == 0
