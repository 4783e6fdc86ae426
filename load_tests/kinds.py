"""The servers the benchmark compares, by kind, and starting them side by side.

Kinds: ``bare`` (BentoML alone on the same ONNX file), ``vigil`` (everything on: the demo
deployment, prediction log and Monitor), ``vigil-noshadow``, ``vigil-nogc``, ``vigil-log``
(log on, Monitor off), ``vigil-nolog`` (log and Monitor off), ``vigil-encrypted`` (the log
encrypted at rest), ``vigil-tls`` (HTTPS, a development certificate) and the two that need
PostgreSQL and NATS (``load_tests.cluster_bench`` gives them a schema and a stream each):
``vigil-pg`` (the local log, the store on PostgreSQL) and ``vigil-nats`` (the log on NATS
JetStream, the store on PostgreSQL: one replica of a cluster). A route kind (``vigil-oip``,
``vigil-v1``) asks a server of another kind through another path (``ROUTES``).
"""

from __future__ import annotations

import os
import ssl
import subprocess
import time
from pathlib import Path

import psutil

from load_tests.servers import ROOT, descendants, serve, stop

ROW = [float(v) for v in (ROOT / "models/demo/artifacts/breast_cancer/v1/reference.csv")
       .read_text().splitlines()[1].split(",")]

BENCH_KEY = "YmVuY2gta2V5LTMyLWJ5dGVzLW5vdC1hLXNlY3JldCE="  # 32 bytes, not a secret
KINDS = {"vigil": {}, "vigil-noshadow": {}, "vigil-nogc": {"VIGIL_SERVER__GC_TUNING": "false"},
         "vigil-log": {"VIGIL_MONITOR__ENABLED": "false"},
         "vigil-nolog": {"VIGIL_MONITOR__ENABLED": "false", "VIGIL_LOG__ENABLED": "false"},
         "vigil-encrypted": {"VIGIL_LOG__ENCRYPTION__KEY": BENCH_KEY},
         "vigil-tls": {},  # its certificate is made at start
         # the store URL, stream and replica id come from cluster_bench (``extra``)
         "vigil-pg": {}, "vigil-nats": {"VIGIL_LOG__BACKEND": "nats"}}
CLUSTER_KINDS = ("vigil-pg", "vigil-nats")
# what a kind must not inherit from the caller's environment: the bench chooses each
# server's store and log (a VIGIL_STORE__URL meant for the replicas would otherwise put
# every kind on one database)
NOT_INHERITED = ("VIGIL_STORE__URL", "VIGIL_LOG__BACKEND", "VIGIL_LOG__NATS__STREAM",
                 "VIGIL_SERVER__REPLICA_ID", "PROMETHEUS_MULTIPROC_DIR")
TRUST: dict[str, ssl.SSLContext] = {}  # an HTTPS server's URL -> a context trusting its CA
TOKEN = "bench-admin-token"
BATCH = [ROW] * 1000
# kind -> (server kind, path, body)
ROUTES: dict[str, tuple[str, str, dict]] = {
    **{k: (k, "/predict", {"model": "breast_cancer", "instances": [ROW]}) for k in KINDS},
    "bare": ("bare", "/predict", {"instances": [ROW]}),
    "vigil-oip": ("vigil", "/v2/models/breast_cancer/infer", {"inputs": [
        {"name": "X", "shape": [1, len(ROW)], "datatype": "FP32", "data": [ROW]}]}),
    "vigil-v1": ("vigil", "/v1/models/breast_cancer:predict", {"instances": [ROW]}),
}

Servers = dict[str, tuple[subprocess.Popen[bytes], str]]


def start(kind: str, workers: int, home: Path, extra: dict[str, str] | None = None
          ) -> tuple[subprocess.Popen[bytes], str]:
    """``bentoml serve`` one kind on a free port with its own data directory and BentoML
    home under ``home``; ``extra``: more environment (a cluster kind's store and stream)."""
    env = {k: v for k, v in os.environ.items() if k not in NOT_INHERITED}
    env.update(BENTOML_HOME=str(home / "bentoml"), BENTOML_DO_NOT_TRACK="true")
    if kind in KINDS:
        env.update(VIGIL_DATA_DIR=str(home), VIGIL_SERVER__WORKERS=str(workers),
                   VIGIL_CONFIG=str(ROOT / "vigil.yaml"), VIGIL_BOOTSTRAP_ADMIN_TOKEN=TOKEN)
        env.update({**KINDS[kind], **(extra or {})})
        target = "service.gateway:Gateway"
    else:
        env.update(BARE_WORKERS=str(workers),
                   BARE_ONNX=str(ROOT / "models/demo/artifacts/breast_cancer/v1/model.onnx"))
        target = "load_tests.bare_service:Bare"
    tls = None
    if kind == "vigil-tls":
        from monitoring.tls import client_context
        from service.devcert import make_dev_pki

        pki = make_dev_pki(home / "tls")
        env.update(VIGIL_SERVER__TLS__CERTFILE=str(pki["server.pem"]),
                   VIGIL_SERVER__TLS__KEYFILE=str(pki["server.key"]))
        tls = client_context(pki["ca.pem"])
    proc, url = serve(target, env, home / f"{kind}.log", tls=tls)
    if tls is not None:
        TRUST[url] = tls
    if kind == "vigil-noshadow":  # the demo deployment without its shadow
        import httpx

        h = {"Authorization": f"Bearer {TOKEN}"}
        rev = httpx.get(f"{url}/admin/deployments/breast_cancer", headers=h).json()["revision"]
        httpx.patch(f"{url}/admin/deployments/breast_cancer", json={"shadows": []},
                    headers={**h, "If-Match": str(rev),
                             "Content-Type": "application/merge-patch+json"}
                    ).raise_for_status()
        time.sleep(2)  # every worker polls the new revision
    return proc, url


def start_all(kinds: list[str], workers: int, home: Path,
              extra: dict[str, dict[str, str]] | None = None,
              kind_of: dict[str, str] | None = None) -> Servers:
    """Start the servers side by side (each waits for its own readiness), keyed by name:
    ``kind_of`` maps a name to its kind (replicas ``r2`` and ``r3`` of ``vigil-nats``), else a
    name is its kind; ``extra``: more environment by name."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(len(kinds)) as pool:
        futures = {k: pool.submit(start, (kind_of or {}).get(k, k), workers, home / k,
                                  (extra or {}).get(k)) for k in kinds}
        servers, failed = {}, None
        for k, f in futures.items():  # every start is waited for, so none is left running
            try:
                servers[k] = f.result()
            except Exception as exc:
                failed = exc
        if failed is not None:
            stop_all(servers)
            raise failed
        return servers


def stop_all(servers: Servers) -> None:
    for proc, _ in servers.values():
        stop(proc)


def worker_cpu(proc: subprocess.Popen[bytes]) -> float:
    """CPU seconds (user + system) the server's workers have used, its Monitor left out."""
    total = 0.0
    for p in descendants(proc.pid):
        try:
            cmd = p.cmdline()
            if "--service-name" not in cmd or "monitor" in cmd[cmd.index("--service-name") + 1]:
                continue
            t = p.cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def hey_with_cpu(proc: subprocess.Popen[bytes], url: str, body: dict, seconds: float,
                 connections: int) -> dict[str, float]:
    """A hey run against one server, with ``cpu_ms``: its workers' CPU a request (ms), which
    a shared machine's noise moves far less than req/s (a worker waiting for a core uses
    none)."""
    from load_tests.loadgen import hey

    cpu = worker_cpu(proc)
    run = hey(url, body, seconds, connections)
    run["cpu_ms"] = (worker_cpu(proc) - cpu) * 1000 / max(1.0, run["requests"])
    return run
