"""The benchmarks' own arithmetic and harness: a target's verdict depends on them."""

from __future__ import annotations

import numpy as np

from load_tests.loadgen import quantile


def test_quantiles_of_latencies_hey_rounded_to_a_tenth_of_a_ms_move_within_the_step() -> None:
    """hey writes each latency to 0.1 ms. Read back from the rounded values, the median of
    latencies spread over 1.20-1.30 ms comes out near 1.25 ms, not at a step's edge, and it
    follows a 2% shift (a plain order statistic would stay on 1.2 or jump to 1.3)."""
    rng = np.random.default_rng(7)
    true = rng.uniform(1.15, 1.35, 20_000)
    for shift in (1.0, 1.02):
        rounded = sorted(np.round(true * shift, 1).tolist())
        assert abs(quantile(rounded, 0.5) - float(np.median(true * shift))) < 0.005
    base = quantile(sorted(np.round(true, 1).tolist()), 0.5)
    moved = quantile(sorted(np.round(true * 1.02, 1).tolist()), 0.5)
    assert 1.01 < moved / base < 1.03


def test_quantiles_at_the_extremes_stay_within_the_data() -> None:
    latencies = [1.0] * 10 + [2.0] * 10 + [30.0]
    assert 0.95 <= quantile(latencies, 0.0) <= 1.05
    assert 29.95 <= quantile(latencies, 0.999) <= 30.05
    assert 1.95 <= quantile(latencies, 0.75) <= 2.05


def test_the_interval_of_a_median_ratio_holds_it_and_narrows_with_rounds() -> None:
    from load_tests.loadgen import median_interval

    assert median_interval([1.02] * 5) == (1.02, 1.02)
    rng = np.random.default_rng(7)
    few = rng.normal(1.03, 0.1, 5).tolist()
    many = rng.normal(1.03, 0.1, 40).tolist()
    for ratios in (few, many):
        low, high = median_interval(ratios)
        assert low <= float(np.median(ratios)) <= high
    assert (median_interval(many)[1] - median_interval(many)[0]
            < median_interval(few)[1] - median_interval(few)[0])


def test_monitor_bench_hands_the_log_over_a_tick_at_a_time(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """``monitor_bench --per-tick``: the Monitor sees the log grow by about a tick's
    requests at a time and reads every record once; the segments end as they were written."""
    from load_tests.monitor_bench import LABELS, by_tick, per_tick_cost, write_log
    from monitoring.log.reader import LocalEventLog
    from monitoring.monitor import Monitor
    from store import make_engine, migrate

    log_dir = tmp_path / "log"
    records = write_log(log_dir, 300, 0.0, 2)  # a prediction and a shadow record a request
    written = {p.name: p.read_bytes() for p in log_dir.iterdir()}
    sizes = []
    for _ in by_tick(log_dir, 50, 300):
        sizes.append(sum(p.stat().st_size for p in log_dir.iterdir()))
    assert len(sizes) == 6 and sizes == sorted(sizes)
    assert {p.name: p.read_bytes() for p in log_dir.iterdir()} == written
    engine = make_engine(f"sqlite:///{tmp_path / 'v.db'}")
    migrate(engine)
    monitor = Monitor(engine, LocalEventLog(log_dir), class_labels_of=lambda m, v: LABELS)
    read, cost = per_tick_cost(monitor, log_dir, 50, 300)
    assert read == records == 600 and cost > 0
    assert {p.name: p.read_bytes() for p in log_dir.iterdir()} == written


def test_a_bench_run_replaces_the_latest_tables_and_keeps_the_run_history() -> None:
    from load_tests.report import keep_history

    previous = "# Benchmark\n\nold table\n\n## Run history\n\n- 09:28: notes\n"
    assert keep_history("# Benchmark\n\nnew table\n", previous) == (
        "# Benchmark\n\nnew table\n\n## Run history\n\n- 09:28: notes\n")
    assert keep_history("# Benchmark\n\nnew table\n", "") == "# Benchmark\n\nnew table\n"
