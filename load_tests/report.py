"""The benchmark's report: the Markdown of the latest run, written above the run history that
``load_tests/bench_results.md`` keeps by hand."""

from __future__ import annotations

import os
import time


def render(*, rounds: int, seconds: float, paced_rounds: int, took: float, rows: list[str],
           health: list[str], parts: list[str], steady: list[str], cluster: list[str]) -> str:
    """The tables of a ``make bench`` run (``load_tests.suite``), in the order they ran."""
    return "\n".join([
        "# Benchmark: Vigil against bare BentoML", "",
        f"`make bench` on {platform_line()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. "
        f"Ran in {took // 60:.0f} min {took % 60:.0f} s. "
        f"`hey` from a separate process; median of {rounds} rounds of {seconds:g} s per cell "
        f"(the 1,000-row batch: {seconds / 2:g} s), A/B alternating; one 30-feature row a "
        "request unless said. Vigil serves the demo "
        "deployment with everything on: champion, 10% canary, a shadow on every request, the "
        "prediction log, the Monitor, drift and metrics. Bare is a BentoML `@bentoml.api` on "
        "the same ONNX file (access log off). Latencies in ms: p50 / p99 / p99.9.", "",
        "| workers | route | connections | bare | bare latency | Vigil | Vigil latency "
        "| throughput ratio | p99 ratio | non-200 (bare / Vigil) |",
        "|---|---|---|---|---|---|---|---|---|---|", *rows, "", *[f"- {h}" for h in health],
        "", "The cost of each part: the same Vigil deployment without it (off) and with it (on), "
        f"A/B alternating over {2 * rounds} rounds of {seconds / 2:g} s: the most each serves "
        "(req/s at 16 connections), then the p50 each gives at a fixed rate of half the "
        f"lower of the two ({paced_rounds} rounds; one paced hey per connection, "
        "evenly staggered), where latency is the requests' own rather than queueing. p50 is "
        "the median of the rounds' p50s, interpolated within hey's 0.1 ms steps; its ratio "
        "is the median of the rounds' ratios (off and on run back to back), with a 90% "
        "bootstrap interval of that median.", "",
        "| workers | part | connections | off | on | req/s ratio | fixed rate "
        "| p50 off / on (ms) | p50 ratio |", "|---|---|---|---|---|---|---|---|---|", *parts,
        "",
        "Sustained load: Vigil (2 workers, everything on) at fixed rates, 25–75% of its "
        "/predict peak above, 16 connections. The latency target is p99 ≤ 25 ms and p99.9 "
        "≤ 50 ms; Monitor lag is the largest `vigil_monitor_lag_seconds` seen during the "
        "cell.", "",
        "| offered | achieved | latency p50 / p99 / p99.9 (ms) | meets target | Monitor lag "
        "(max) | non-200 |", "|---|---|---|---|---|---|", *steady, "", *cluster])


HISTORY = "## Run history"


def keep_history(latest: str, previous: str) -> str:
    """The latest run's tables, then the run history the previous file kept below its
    ``## Run history`` heading (written by hand: what each run showed and what changed)."""
    at = previous.find(HISTORY)
    return latest if at < 0 else latest.rstrip("\n") + "\n\n" + previous[at:]


def platform_line() -> str:
    import platform

    return (f"{os.cpu_count()} cores, {platform.machine()}, Python "
            f"{platform.python_version()}")
