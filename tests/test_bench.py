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


def test_without_postgresql_the_nats_rows_are_one_line_saying_why(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    from load_tests import cluster_bench

    monkeypatch.delenv("VIGIL_STORE__URL", raising=False)
    monkeypatch.delenv("VIGIL_TEST_POSTGRES_URL", raising=False)
    assert cluster_bench.section(1, 1) == [
        "## The prediction log on NATS JetStream", "",
        "Skipped: no PostgreSQL: set VIGIL_STORE__URL (or VIGIL_TEST_POSTGRES_URL) to a "
        "postgresql+psycopg:// URL.", ""]
    assert cluster_bench.wanted(None) and cluster_bench.wanted("nats")
    assert cluster_bench.wanted("replicas") and not cluster_bench.wanted("TLS")


def test_the_nats_row_is_the_median_ratio_with_the_range_of_the_rounds() -> None:
    """Each round's nats run against the local run beside it: the row gives the ratio of the
    medians and the lowest and highest round's ratio (the spread a reader must see)."""
    from load_tests.cluster_bench import backend_rows

    def run(rps: float, p99: float, cpu: float = 0.4) -> dict[str, float]:
        return {"rps": rps, "p50": 1.0, "p99": p99, "p99.9": 9.0, "non_200": 0.0,
                "cpu_ms": cpu}

    rows = backend_rows({"vigil-pg": [run(1000, 10), run(1200, 12), run(800, 8)],
                         "vigil-nats": [run(950, 10), run(1000, 15), run(840, 8, 0.5)]},
                        2, 16)
    assert rows[0] == ("| 2 | 16 | local | 1,000 req/s | 1.0 / 10.0 / 9.0 | 1 | 1 | 0.400 "
                       "| 0 |")
    # medians 950 / 1000; rounds 0.95, 0.83, 1.05
    assert rows[1] == ("| 2 | 16 | nats | 950 req/s | 1.0 / 10.0 / 9.0 | **0.95** "
                       "(0.83–1.05) | 1.00 | 0.400 (1.00×) | 0 |")


def test_the_monitor_reads_every_published_record_once_from_nats() -> None:
    """A tiny run of the bench's Monitor measurement on the machine's PostgreSQL and NATS:
    what two real publishers wrote to a fresh stream is consumed by a replica's Monitor, each
    record once, as many as the local Monitor reads from segments of the same records."""
    import pytest

    from load_tests import cluster_bench

    b = cluster_bench.backends()
    if isinstance(b, str):
        pytest.skip(b)
    try:
        rates = cluster_bench.monitor_rates(b, requests=200)
    finally:
        b.close()
    assert rates.spilled == 0
    assert rates.nats[:2] == rates.local[:2] == (rates.local[0], rates.local[0])
    assert rates.local[0] > 400  # two records a request and labels for about half
    assert "| NATS (the model's partition, 1 of 8) |" in "\n".join(rates.table())
