"""Side-by-side benchmark: Vigil (demo deployment: champion + 10% canary + a shadow) against a
bare BentoML service on the same ONNX file, same worker count, same load, in one run.

    python -m load_tests.bench [--rounds 3] [--seconds 8] [--workers 1 2] [--connections 16]
                               [--kinds bare vigil]
    python -m load_tests.bench --suite [--seconds 5] [--only NAME]   # make bench

The kinds are ``load_tests.kinds``'s; ratios are against the first kind given; ``cpu ms/req``
is the Gateway workers' CPU (user + system, the Monitor left out) over the requests answered.
``vigil-pg`` and ``vigil-nats`` need PostgreSQL and NATS (``load_tests.cluster_bench``).
``--suite`` runs the full matrix (``load_tests.suite``) and writes its Markdown tables.

Drives each server with `hey` (Debian package `hey`) from a separate process, alternating
A/B per round so both see the same machine noise, and prints req/s, p50, p99 and p99.9 of
each and the ratio to the first. Only 127.0.0.1 is contacted; every run stops by itself.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests import cluster_bench  # noqa: E402
from load_tests.kinds import CLUSTER_KINDS, ROUTES, hey_with_cpu, start, stop_all  # noqa: E402
from load_tests.loadgen import hey  # noqa: E402
from load_tests.probes import quiesce  # noqa: E402
from load_tests.servers import ROOT  # noqa: E402
from load_tests.suite import PACED_ROUNDS, suite  # noqa: E402


def compare(kinds: list[str], workers: int, rounds: int, seconds: float, connections: int
            ) -> dict[str, dict[str, float]]:
    """The median over ``rounds`` of each kind's run, the kinds alternating in each round."""
    needed = sorted({ROUTES[k][0] for k in kinds})
    with tempfile.TemporaryDirectory() as tmp, cluster_bench.backends_for(needed) as extra:
        servers = {}
        try:
            for k in needed:
                servers[k] = start(k, workers, Path(tmp) / k, extra.get(k))

            def url(kind: str) -> str:
                return servers[ROUTES[kind][0]][1] + ROUTES[kind][1]

            for kind in kinds:  # warm up
                hey(url(kind), ROUTES[kind][2], 2, connections)
            runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
            for _ in range(rounds):
                for kind in kinds:
                    quiesce(servers)  # no server pays for another's Monitor backlog
                    runs[kind].append(hey_with_cpu(servers[ROUTES[kind][0]][0], url(kind),
                                                   ROUTES[kind][2], seconds, connections))
        finally:
            stop_all(servers)
    return {k: {m: statistics.median(r[m] for r in v) for m in v[0]} for k, v in runs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--kinds", nargs="+", default=["bare", "vigil"],
                        choices=list(ROUTES))
    parser.add_argument("--suite", action="store_true",
                        help="the full matrix of the performance issue, as a Markdown table")
    parser.add_argument("--out", type=Path, default=ROOT / "load_tests" / "bench_results.md")
    parser.add_argument("--only", help="with --suite: only the cells whose name holds this")
    parser.add_argument("--paced-rounds", type=int, default=PACED_ROUNDS,
                        help="with --suite: rounds of each part's p50 at a fixed rate")
    args = parser.parse_args()
    if args.suite:
        if not shutil.which("hey"):
            sys.exit("needs `hey` (apt-get install hey)")
        suite(args.rounds, args.seconds, args.out, args.only, args.paced_rounds)
        return
    kinds = args.kinds
    if not shutil.which("hey"):
        sys.exit("needs `hey` (apt-get install hey)")
    if set(kinds) & set(CLUSTER_KINDS) and isinstance(cluster_bench.backends(), str):
        sys.exit(f"{' and '.join(sorted(set(kinds) & set(CLUSTER_KINDS)))}: "
                 f"{cluster_bench.backends()}")
    for workers in args.workers:
        med = compare(kinds, workers, args.rounds, args.seconds, args.connections)
        print(f"\n{workers} worker(s), {args.connections} connections, "
              f"median of {args.rounds} rounds x {args.seconds:g}s")
        print(f"{'':16}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'p99.9 ms':>10}"
              f"{'non-200':>9}{'req/s ratio':>13}{'p99 ratio':>11}{'cpu ms/req':>12}")
        base = med[kinds[0]]
        for kind in kinds:
            m = med[kind]
            print(f"{kind:16}{m['rps']:>10.0f}{m['p50']:>10.1f}{m['p99']:>10.1f}"
                  f"{m['p99.9']:>10.1f}{m['non_200']:>9.0f}{m['rps'] / base['rps']:>13.2f}"
                  f"{m['p99'] / base['p99']:>11.2f}{m['cpu_ms']:>12.3f}")
        print(f"(ratios against {kinds[0]}; routes: "
              + ", ".join(f"{k} {ROUTES[k][1]}" for k in kinds) + ")")


if __name__ == "__main__":
    main()
