"""Driving `hey` (Debian package `hey`) and reading its numbers: a run's req/s and latency
quantiles, and how uncertain a median of rounds' ratios is. Shared by ``load_tests.bench``;
only 127.0.0.1 is contacted and every run stops by itself."""

from __future__ import annotations

import bisect
import json
import statistics
import subprocess
import tempfile
import time

HEY_STEP_MS = 0.1  # hey writes response times to 0.1 ms (its CSV's %4.4f s)


def hey(url: str, body: dict, seconds: float, connections: int,
        rate: float | None = None) -> dict[str, float]:
    """Run hey for ``seconds``, as fast as it can or, with ``rate``, at that many req/s in
    all; percentiles come from its per-request CSV, not its summary (which stops at p99).

    hey's ``-q`` starts every connection's ticker at once, so 16 paced connections send 16
    requests together and the last waits for the first 15: at 300 req/s that alone made a
    p50 of 7 ms for a 1 ms request. A paced run is therefore one hey process per connection,
    ``-c 1``, started 1/rate apart, so the requests arrive evenly spread."""
    with tempfile.NamedTemporaryFile("w", suffix=".json") as f:  # a batch is too long for argv
        json.dump(body, f)
        f.flush()

        def command(c: int, limit: list[str]) -> list[str]:
            return ["hey", "-z", f"{seconds}s", "-c", str(c), "-m", "POST", "-o", "csv",
                    "-T", "application/json", "-D", f.name, *limit, url]

        if not rate:
            outs = [(0.0, subprocess.run(command(connections, []), capture_output=True,
                                         text=True, timeout=seconds + 60).stdout)]
        else:
            procs = []
            began = time.monotonic()
            for i in range(connections):
                time.sleep(max(0.0, began + i / rate - time.monotonic()))
                procs.append((time.monotonic() - began, subprocess.Popen(
                    command(1, ["-q", f"{rate / connections:.4f}"]), stdout=subprocess.PIPE,
                    stderr=subprocess.DEVNULL, text=True)))
            outs = [(at, p.communicate(timeout=seconds + 60)[0]) for at, p in procs]
    rows = [(at, line.split(",")) for at, out in outs for line in out.splitlines()[1:]
            if line and line[0].isdigit()]
    latencies = sorted(float(r[0]) * 1000 for _, r in rows)
    statuses = [r[6] for _, r in rows]
    # columns: response-time, DNS+dialup, DNS, request-write, response-delay, response-read,
    # status-code, offset (s from that process's start)
    span = max(at + float(r[7]) + float(r[0]) for at, r in rows) - min(at for at, _ in rows)
    return {"rps": len(rows) / span, "p50": quantile(latencies, 0.50),
            "p99": quantile(latencies, 0.99), "p99.9": quantile(latencies, 0.999),
            "non_200": float(sum(s != "200" for s in statuses)), "requests": float(len(rows))}


def quantile(latencies: list[float], q: float, step: float = HEY_STEP_MS) -> float:
    """The ``q`` quantile of sorted latencies that hey rounded to ``step`` ms, interpolated
    within the step as grouped data is (the values rounded to one step spread evenly over
    it).

    hey writes each response time to 0.1 ms. A p50 near 1.2 ms then moves only in steps of
    8%: taken as is, the shadow's p50 ratio, whose target is 1.05, could only come out as
    1.00, 1.08 or 0.92. Interpolated, it moves with the share of requests on either side
    of the step."""
    n = len(latencies)
    rank = q * n
    v = latencies[min(n - 1, int(rank))]
    below = bisect.bisect_left(latencies, v - step / 2)
    within = bisect.bisect_left(latencies, v + step / 2) - below
    return v - step / 2 + step * (rank - below) / within


def median_interval(ratios: list[float], level: float = 0.9, resamples: int = 2000,
                    seed: int = 7) -> tuple[float, float]:
    """A bootstrap interval of the median of ``ratios`` (percentile method, seeded): how far
    the rounds' noise leaves the median uncertain."""
    import random

    rng = random.Random(seed)
    medians = sorted(statistics.median(rng.choices(ratios, k=len(ratios)))
                     for _ in range(resamples))
    tail = (1 - level) / 2
    return medians[int(tail * resamples)], medians[int((1 - tail) * resamples) - 1]
