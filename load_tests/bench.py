"""Side-by-side benchmark: Vigil (demo deployment: champion + 10% canary + a shadow) against a
bare BentoML service on the same ONNX file, same worker count, same load, in one run.

    python load_tests/bench.py [--rounds 3] [--seconds 8] [--workers 1 2] [--connections 16]
                               [--kinds bare vigil]

Kinds: ``bare`` (BentoML alone), ``vigil`` (everything on: prediction log and Monitor),
``vigil-log`` (log on, Monitor off), ``vigil-nolog`` (log and Monitor off), ``vigil-oip``
(the same server as ``vigil``, asked through ``POST /v2/models/breast_cancer/infer``) and
``vigil-v1`` (through ``POST /v1/models/breast_cancer:predict``). Ratios are against the first
kind given.

Drives each server with `hey` (Debian package `hey`) from a separate process, alternating
A/B per round so both see the same machine noise, and prints req/s, p50, p99 and p99.9 of
each and the ratio Vigil / bare. Only 127.0.0.1 is contacted; every run stops by itself.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from load_tests.servers import ROOT, serve, stop  # noqa: E402

ROW = [float(v) for v in (ROOT / "models/demo/artifacts/breast_cancer/v1/reference.csv")
       .read_text().splitlines()[1].split(",")]


KINDS = {"vigil": {}, "vigil-log": {"VIGIL_MONITOR__ENABLED": "false"},
         "vigil-nolog": {"VIGIL_MONITOR__ENABLED": "false", "VIGIL_LOG__ENABLED": "false"}}
# kind -> (server kind, path, body)
ROUTES: dict[str, tuple[str, str, dict]] = {
    **{k: (k, "/predict", {"model": "breast_cancer", "instances": [ROW]}) for k in KINDS},
    "bare": ("bare", "/predict", {"instances": [ROW]}),
    "vigil-oip": ("vigil", "/v2/models/breast_cancer/infer", {"inputs": [
        {"name": "X", "shape": [1, len(ROW)], "datatype": "FP32", "data": [ROW]}]}),
    "vigil-v1": ("vigil", "/v1/models/breast_cancer:predict", {"instances": [ROW]}),
}


def start(kind: str, workers: int, home: Path) -> tuple[subprocess.Popen[bytes], str]:
    env = {**os.environ, "BENTOML_HOME": str(home / "bentoml"), "BENTOML_DO_NOT_TRACK": "true"}
    if kind in KINDS:
        env.update(VIGIL_DATA_DIR=str(home), VIGIL_SERVER__WORKERS=str(workers),
                   VIGIL_CONFIG=str(ROOT / "vigil.yaml"), **KINDS[kind])
        target = "service.gateway:Gateway"
    else:
        env.update(BARE_WORKERS=str(workers),
                   BARE_ONNX=str(ROOT / "models/demo/artifacts/breast_cancer/v1/model.onnx"))
        target = "load_tests.bare_service:Bare"
    return serve(target, env, home / f"{kind}.log")


def hey(url: str, body: dict, seconds: float, connections: int) -> dict[str, float]:
    """Run hey for ``seconds``; percentiles come from its per-request CSV, not its summary
    (which stops at p99)."""
    out = subprocess.run(
        ["hey", "-z", f"{seconds}s", "-c", str(connections), "-m", "POST", "-o", "csv",
         "-T", "application/json", "-d", json.dumps(body), url],
        capture_output=True, text=True, timeout=seconds + 60).stdout
    rows = [line.split(",") for line in out.splitlines()[1:] if line and line[0].isdigit()]
    latencies = sorted(float(r[0]) * 1000 for r in rows)
    statuses = [r[6] for r in rows]
    span = max(float(r[7]) + float(r[0]) for r in rows)

    def pct(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))]

    return {"rps": len(rows) / span, "p50": pct(0.50), "p99": pct(0.99), "p99.9": pct(0.999),
            "non_200": float(sum(s != "200" for s in statuses))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=8)
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--kinds", nargs="+", default=["bare", "vigil"],
                        choices=list(ROUTES))
    args = parser.parse_args()
    kinds = args.kinds
    if not shutil.which("hey"):
        sys.exit("needs `hey` (apt-get install hey)")
    report = []
    for workers in args.workers:
        with tempfile.TemporaryDirectory() as tmp:
            needed = sorted({ROUTES[k][0] for k in kinds})
            servers = {k: start(k, workers, Path(tmp) / k) for k in needed}

            def url(kind: str, servers: dict = servers) -> str:
                return servers[ROUTES[kind][0]][1] + ROUTES[kind][1]

            try:
                for kind in kinds:  # warm up
                    hey(url(kind), ROUTES[kind][2], 2, args.connections)
                runs: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
                for _ in range(args.rounds):
                    for kind in kinds:
                        runs[kind].append(hey(url(kind), ROUTES[kind][2], args.seconds,
                                              args.connections))
            finally:
                for proc, _ in servers.values():
                    stop(proc)
        med = {k: {m: statistics.median(r[m] for r in v) for m in v[0]}
               for k, v in runs.items()}
        report.append((workers, med))
        print(f"\n{workers} worker(s), {args.connections} connections, "
              f"median of {args.rounds} rounds x {args.seconds:g}s")
        print(f"{'':12}{'req/s':>10}{'p50 ms':>10}{'p99 ms':>10}{'p99.9 ms':>10}"
              f"{'non-200':>9}{'req/s ratio':>13}{'p99 ratio':>11}")
        base = med[kinds[0]]
        for kind in kinds:
            m = med[kind]
            print(f"{kind:12}{m['rps']:>10.0f}{m['p50']:>10.1f}{m['p99']:>10.1f}"
                  f"{m['p99.9']:>10.1f}{m['non_200']:>9.0f}{m['rps'] / base['rps']:>13.2f}"
                  f"{m['p99'] / base['p99']:>11.2f}")
        print(f"(ratios against {kinds[0]}; routes: "
              + ", ".join(f"{k} {ROUTES[k][1]}" for k in kinds) + ")")


if __name__ == "__main__":
    main()
