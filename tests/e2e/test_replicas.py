"""Two replicas (two `bentoml serve`, one PostgreSQL store, one NATS stream): keyed load and
labels through both, the Monitors split the partitions, and every count equals the
acknowledged responses exactly; SIGKILL the Monitor holding a partition under load and the
counts stay exact after it (or the other replica) takes it back."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sklearn.datasets import load_breast_cancer

from load_tests.servers import seed_demo_models
from monitoring.log.jetstream import StreamSpec, connect
from tests.e2e.conftest import Server, monitor_counts, start_server, stop_server
from tests.natsd import machine_nats

pytestmark = pytest.mark.e2e
STREAM = "T" + uuid.uuid4().hex[:12].upper()
DATA = load_breast_cancer()


@pytest.fixture(scope="module")
def replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[list[Server]]:
    url = machine_nats()
    base = os.environ.get("VIGIL_TEST_POSTGRES_URL")
    if not base:
        pytest.skip("VIGIL_TEST_POSTGRES_URL is not set: replicas share a PostgreSQL store")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    started = []
    try:
        for name in ("r1", "r2"):
            data = tmp_path_factory.mktemp(f"vigil-{name}")
            seed_demo_models(data / "bentoml")
            started.append(start_server(data, {
                "VIGIL_STORE__URL": f"{base}?options=-csearch_path%3D{schema}",
                "VIGIL_LOG__BACKEND": "nats", "VIGIL_LOG__NATS__STREAM": STREAM,
                "VIGIL_LOG__PARTITIONS": "8", "VIGIL_LOG__NATS__LEASE_SECONDS": "3",
                "VIGIL_SERVER__REPLICA_ID": name, "VIGIL_SERVER__WORKERS": "1"}))
        yield [srv for _, srv in started]
    finally:
        for proc, _ in started:
            stop_server(proc)

        async def drop() -> None:
            nc = await connect(StreamSpec(url=url, name=STREAM), reconnect=False)
            await nc.jetstream().delete_stream(STREAM)
            await nc.close()

        asyncio.run(drop())
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()


def wait_for(cond: Any, timeout: float = 60.0) -> float:
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, "timed out"
        time.sleep(0.2)
    return time.monotonic() - start


def cluster(srv: Server) -> dict[str, Any]:
    return httpx.get(f"{srv.url}/admin/cluster", headers=srv.headers("viewer"),
                     timeout=10).json()  # type: ignore[no-any-return]


def load(servers: list[Server], start: int, n: int) -> list[dict[str, Any]]:
    def ask(i: int) -> dict[str, Any]:
        srv = servers[i % len(servers)]  # round robin over the replicas
        row = dict(zip(DATA.feature_names, DATA.data[i % len(DATA.data)].tolist(),
                       strict=True))
        r = httpx.post(f"{srv.url}/predict", json={"model": "breast_cancer", "inputs": [row]},
                       headers={"X-Routing-Key": f"user-{i}"}, timeout=30)
        assert r.status_code == 200, r.text
        return r.json()  # type: ignore[no-any-return]

    with ThreadPoolExecutor(8) as pool:
        return list(pool.map(ask, range(start, start + n)))


def primaries(srv: Server) -> dict[tuple[str, str], int]:
    return {k: n for k, n in monitor_counts(srv, "breast_cancer").items() if k[1] != "shadow"}


def test_two_replicas_count_once_and_survive_a_killed_monitor(replicas: list[Server]) -> None:
    r1, r2 = replicas
    wait_for(lambda: {p["owner"] for p in cluster(r1)["partitions"]} == {"r1", "r2"})
    view = cluster(r2)
    assert sorted(r["id"] for r in view["replicas"]) == ["r1", "r2"]
    assert Counter(p["owner"] for p in view["partitions"]) == {"r1": 4, "r2": 4}

    answers = load(replicas, 0, 200)
    acknowledged = Counter((a["version"], a["variant"]) for a in answers)
    wait_for(lambda: primaries(r1) == dict(acknowledged))
    labels = [{"request_id": a["request_id"], "label": int(DATA.target[i % len(DATA.data)])}
              for i, a in enumerate(answers[:60])]
    for k, srv in enumerate(replicas):  # labels through either replica
        r = httpx.post(f"{srv.url}/feedback", headers=srv.headers("feedback"), timeout=30,
                       json={"model": "breast_cancer", "items": labels[k::2]})
        assert r.status_code == 202, r.text

    def joined() -> int:
        r = httpx.get(f"{r2.url}/admin/models/breast_cancer/stats",
                      headers=r2.headers("viewer"), timeout=10)
        return int(r.json()["feedback"]["joined"])

    wait_for(lambda: joined() == 60)

    # SIGKILL the Monitor that holds breast_cancer's partition, under load
    owner_of = {p["partition"]: p["owner"] for p in cluster(r1)["partitions"]}
    from monitoring.log.partitions import partition_of

    p = partition_of("breast_cancer", 8)
    victim = next(r for r in cluster(r1)["replicas"] if r["id"] == owner_of[p])
    with ThreadPoolExecutor(1) as pool:
        more = pool.submit(load, replicas, 200, 300)
        time.sleep(0.5)
        os.kill(victim["monitor_pid"], signal.SIGKILL)
        killed = time.time()

        def renewed_since_the_kill() -> bool:  # by the respawned Monitor or the other replica
            row = cluster(r1)["partitions"][p]
            return bool(row["lease_expires_at"] and row["lease_expires_at"] - 3.0 > killed)

        failover = wait_for(renewed_since_the_kill)
        answers += more.result()
    acknowledged = Counter((a["version"], a["variant"]) for a in answers)
    row = cluster(r1)["partitions"][p]
    print(f"partition {p} (held by {victim['id']}) renewed {failover:.1f} s after its "
          f"Monitor's SIGKILL, by {row['owner']}, generation {row['generation']} "
          "(lease 3 s, tick 0.25 s)")
    assert failover < 3.0 + 2.0
    wait_for(lambda: primaries(r2) == dict(acknowledged))
    time.sleep(2)
    assert primaries(r1) == dict(acknowledged), "nothing skipped, nothing twice"
    assert joined() == 60
