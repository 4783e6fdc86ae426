"""``make bench``: the full matrix of the performance issues as Markdown tables, A/B
alternating per round so both sides of a ratio see the same machine noise. Vigil against bare
BentoML per route, worker count and connection count; then the cost of each part (the same
Vigil without it and with it); the sustained-load sweep; and the prediction log on NATS
JetStream (``load_tests.cluster_bench``: one replica on nats against local, 3 replicas
against 1, the Monitor's events/s from NATS)."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path

from load_tests import cluster_bench
from load_tests.kinds import BATCH, ROUTES, start_all, stop_all
from load_tests.loadgen import hey, median_interval
from load_tests.probes import caught_up, monitor_health, quiesce, sustained
from load_tests.report import keep_history, render

PACED_ROUNDS = 5  # per part, for its p50 at a fixed rate


def suite(rounds: int, seconds: float, out: Path, only: str | None = None,
          paced_rounds: int = PACED_ROUNDS) -> None:
    """The full matrix of the performance issue, A/B alternating per round: Vigil against
    bare BentoML, then the cost of the shadow and of logging + Monitor + drift."""
    t0 = time.monotonic()
    bare_batch = {"instances": BATCH}
    vigil_batch = {"model": "breast_cancer", "instances": BATCH}
    rows: list[str] = []
    parts: list[str] = []
    health: list[str] = []
    steady: list[str] = []
    for workers in (1, 2):
        cells = [("/predict", 16, "bare", "/predict", ROUTES["bare"][2], "vigil", "/predict",
                  ROUTES["vigil"][2]),
                 ("/v2/models/{m}/infer vs bare /predict", 16, "bare", "/predict",
                  ROUTES["bare"][2], "vigil", "/v2/models/breast_cancer/infer",
                  ROUTES["vigil-oip"][2])]
        if workers == 2:
            cells += [("/predict", 1, "bare", "/predict", ROUTES["bare"][2], "vigil",
                       "/predict", ROUTES["vigil"][2]),
                      ("/predict", 64, "bare", "/predict", ROUTES["bare"][2], "vigil",
                       "/predict", ROUTES["vigil"][2]),
                      ("/predict, 1,000-row batch", 4, "bare", "/predict", bare_batch, "vigil",
                       "/predict", vigil_batch),
                      ("a shadow on every request", 16, "vigil-noshadow", "/predict",
                       ROUTES["vigil"][2], "vigil", "/predict", ROUTES["vigil"][2]),
                      # shadows run in the Monitor on logged records: without the log
                      # none runs, so this part is measured without the shadow on both
                      # sides (the shadow's own cost is the cell above)
                      ("prediction log + Monitor + drift (no shadow)", 16, "vigil-nolog",
                       "/predict", ROUTES["vigil"][2], "vigil-noshadow", "/predict",
                       ROUTES["vigil"][2]),
                      # issue 28: encryption at rest (target: at most 5% of req/s) and HTTPS
                      ("prediction log encrypted at rest", 16, "vigil", "/predict",
                       ROUTES["vigil"][2], "vigil-encrypted", "/predict", ROUTES["vigil"][2]),
                      ("TLS (HTTPS)", 16, "vigil", "/predict", ROUTES["vigil"][2], "vigil-tls",
                       "/predict", ROUTES["vigil"][2])]
        if only:  # a subset, for measuring one change (docs/performance.md's table is the full run)
            cells = [c for c in cells if only in c[0]]
            if not cells:
                continue
        kinds = sorted({c[2] for c in cells} | {c[5] for c in cells})
        with tempfile.TemporaryDirectory() as tmp:
            servers = start_all(kinds, workers, Path(tmp))
            try:
                warm: set[tuple[str, str, int]] = set()
                for _, conns, a, pa, ba, b, pb, bb in cells:  # warm up each route once
                    for kind, path, body in ((a, pa, ba), (b, pb, bb)):
                        if (kind, path, len(body.get("instances", ()))) not in warm:
                            warm.add((kind, path, len(body.get("instances", ()))))
                            hey(servers[kind][1] + path, body, 2, conns)
                for name, conns, a, pa, ba, b, pb, bb in cells:
                    runs: dict[str, list[dict[str, float]]] = {a: [], b: []}
                    # a part's cost is a few percent against drifts of the shared machine's
                    # speed of 20-30% over minutes: twice the rounds, half as long, for the
                    # same time (finer alternation)
                    n, secs = (rounds, seconds) if a == "bare" else (2 * rounds, seconds / 2)
                    if "batch" in name:
                        # each 1,000-row round leaves the Monitor ~10 s of drift to catch up
                        # before the next (2 cores): half as long keeps make bench under 10 min
                        secs = seconds / 2
                    began = time.monotonic()
                    for _ in range(n):
                        quiesce(servers)
                        runs[a].append(hey(servers[a][1] + pa, ba, secs, conns))
                        quiesce(servers)
                        runs[b].append(hey(servers[b][1] + pb, bb, secs, conns))
                    med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]}
                           for k, v in runs.items()}
                    x, y = med[a], med[b]
                    per = 1000 if "batch" in name else 1
                    unit = "rows/s" if per > 1 else "req/s"
                    if a != "bare":  # the cost of one part: Vigil without it against with it
                        # p50 at a fixed rate well below either's peak: what the part adds to
                        # one request's latency (at saturation p50 is mostly queueing)
                        rate = round(min(x["rps"], y["rps"]) * 0.5 / conns) * conns
                        paced: dict[str, list[float]] = {a: [], b: []}
                        # 5 rounds: with 2 the p50 ratio moved by ±0.15 run to run; make
                        # bench stays under 10 min (the batch cell is shorter since 7a09c1a)
                        for _ in range(paced_rounds):
                            quiesce(servers)
                            paced[a].append(hey(servers[a][1] + pa, ba, secs, conns,
                                                rate=rate)["p50"])
                            quiesce(servers)
                            paced[b].append(hey(servers[b][1] + pb, bb, secs, conns,
                                                rate=rate)["p50"])
                        p_off, p_on = (statistics.median(paced[k]) for k in (a, b))
                        # each round's off and on run side by side in time: the median of
                        # the rounds' ratios leaves out the machine's drift between rounds,
                        # which the ratio of the medians does not (p50 moved 1.0-2.75 ms
                        # round to round for the same server)
                        ratios = [on / off for off, on in zip(paced[a], paced[b],
                                                              strict=True)]
                        low, high = median_interval(ratios)
                        parts.append(
                            f"| {workers} | {name} | {conns} | {x['rps']:,.0f} req/s | "
                            f"{y['rps']:,.0f} req/s | **{y['rps'] / x['rps']:.2f}** | "
                            f"{rate:,} req/s | {p_off:.2f} / {p_on:.2f} | "
                            f"**{statistics.median(ratios):.2f}** ({low:.2f}–{high:.2f}) |")
                        print(parts[-1], f"({time.monotonic() - began:.0f} s)", flush=True)
                        continue
                    rows.append(
                        f"| {workers} | {name} | {conns} | {x['rps'] * per:,.0f} {unit} | "
                        f"{x['p50']:.1f} / {x['p99']:.1f} / {x['p99.9']:.1f} | "
                        f"{y['rps'] * per:,.0f} {unit} | "
                        f"{y['p50']:.1f} / {y['p99']:.1f} / {y['p99.9']:.1f} | "
                        f"**{y['rps'] / x['rps']:.2f}** | {y['p99'] / x['p99']:.2f} | "
                        f"{x['non_200']:.0f} / {y['non_200']:.0f} |")
                    print(rows[-1], f"({time.monotonic() - began:.0f} s)", flush=True)
                    if workers == 2 and conns == 16 and pb == "/predict" and a == "bare":
                        # before the batch cell, whose drift work the Monitor cannot keep up
                        # with on 2 cores: the sweep starts from a caught-up Monitor
                        caught_up(servers["vigil"][1])
                        steady = sustained(servers["vigil"][1] + "/predict",
                                           ROUTES["vigil"][2], y["rps"], seconds)
                time.sleep(3)  # let the Monitor read the last records
                for kind in ("vigil", "vigil-noshadow"):  # the Vigils with a log
                    if kind in servers:
                        lag, drops, shadows = monitor_health(servers[kind][1])
                        health.append(f"{workers} worker(s), {kind}: Monitor lag {lag} events "
                                      f"after the run, {drops:.0f} log records dropped; "
                                      f"shadow answers: {shadows}")
            finally:
                stop_all(servers)
    cluster = cluster_bench.section(rounds, seconds) if cluster_bench.wanted(only) else []
    took = time.monotonic() - t0
    text = render(rounds=rounds, seconds=seconds, paced_rounds=paced_rounds, took=took,
                  rows=rows, health=health, parts=parts, steady=steady, cluster=cluster)
    out.write_text(keep_history(text, out.read_text() if out.exists() else ""))
    print(text)
