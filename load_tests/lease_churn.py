"""How often partitions change hands among N replicas under load: ``python -m
load_tests.lease_churn [--replicas 3] [--seconds 60] [--nice 10]``.

Starts the replicas of ``demo/cluster.py`` (lease 3 s, tick 0.25 s, their Monitors at
``monitor.nice`` ``--nice``: 10 is the default of a real deployment, the demo runs them at 0),
waits until every Monitor holds its share, then sends keyed ``/predict`` load round robin
for ``--seconds`` (with ``--hogs`` busy processes at nice 0 beside it, each in a session of
its own: the other tenants of a shared machine) and counts the lease handovers in that
time: every change of a partition's owner adds one to its generation, so the handovers are
the growth of the generations' sum.
A benchmark, not a test (a count of this machine's contention): docs/cluster.md.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
from sklearn.datasets import load_breast_cancer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from demo.cluster import ADMIN, Cluster, keyed_load, wait  # noqa: E402


def generations(cluster: Cluster) -> int:
    return sum(p["generation"] or 0 for p in cluster.view()["partitions"])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--nice", type=int, default=10)
    ap.add_argument("--threads", type=int, default=6)
    ap.add_argument("--hogs", type=int, default=0, help="busy processes during the load")
    args = ap.parse_args(argv)
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="vigil-churn-")), token=ADMIN,
                      env={"VIGIL_BOOTSTRAP_ADMIN_TOKEN": ADMIN,
                           "VIGIL_MONITOR__NICE": str(args.nice)})
    data = load_breast_cancer()
    order = np.random.default_rng(7).permutation(len(data.target))
    rows = [dict(zip(data.feature_names, data.data[i].tolist(), strict=True)) for i in order]
    try:
        cluster.start(args.replicas)
        wait(cluster.spread, 90)
        time.sleep(5)  # the shares settle
        before, started = generations(cluster), time.monotonic()
        hogs = [subprocess.Popen([sys.executable, "-c", "import time\nend = time.monotonic() + "
                                  f"{args.seconds + 5}\nwhile time.monotonic() < end: pass"],
                                 start_new_session=True) for _ in range(args.hogs)]
        sent = 0
        try:
            with ThreadPoolExecutor(1) as pool:
                while time.monotonic() - started < args.seconds:
                    sent += len(pool.submit(keyed_load, cluster, rows, "breast_cancer", sent,
                                            120, args.threads).result())
        finally:
            for hog in hogs:
                hog.kill()
                hog.wait()
        elapsed = time.monotonic() - started
        after = generations(cluster)
        owners = sorted(str(p["owner"]) for p in cluster.view()["partitions"])
        print(f"{args.replicas} replicas, monitor.nice {args.nice}, {args.hogs} hogs: "
              f"{after - before} lease "
              f"handovers in {elapsed:.0f} s of load ({sent} requests, "
              f"{sent / elapsed:.0f}/s); owners at the end {owners}")
        return 0
    finally:
        cluster.stop()


if __name__ == "__main__":
    sys.exit(main())
