"""``GET /admin/cluster`` (viewer) answers exactly the contract's fields, from what the
Monitors of the replicas commit (``service.cluster.ClusterMember``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from monitoring.log.jetstream import connect
from monitoring.log.publisher import NatsWriter
from monitoring.log.sink import render
from monitoring.metrics import MonitorMetrics
from monitoring.monitor import Monitor
from service.admin.app import create_app
from service.cluster import ClusterMember, stream_spec
from service.context import build_context
from service.settings import load_settings
from store import make_engine, migrate
from tests.natsd import machine_nats
from tests.test_cluster_monitor import MODELS, counts, expected, publish

TOKEN = "cluster-viewer"


def test_cluster_view_names_replicas_leases_and_lag(tmp_path: Path) -> None:
    machine_nats()
    stream = "T" + uuid.uuid4().hex[:12].upper()
    settings = load_settings(data_dir=tmp_path, log={
        "backend": "nats", "partitions": 3, "nats": {"stream": stream, "lease_seconds": 5}},
        server={"base_url": "http://10.0.0.7:3000"},
        auth={"tokens": [{"name": "v", "role": "viewer",
                          "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]})
    engine = make_engine(settings.store_url)
    migrate(engine)
    metrics = MonitorMetrics(CollectorRegistry())
    member = ClusterMember(settings, engine, metrics)
    loop = Monitor(engine, member.log, class_labels_of=lambda m, v: None)
    loop.load()
    writer = NatsWriter(stream_spec(settings), tmp_path / "spill", f"gw-1-{time.time_ns()}",
                        render)
    try:
        publish(writer, 0, 120)
        member.tick(loop)
        assert counts(engine) == expected(120)
        ctx = build_context(settings)
        with TestClient(create_app(ctx)) as c:
            assert c.get("/cluster").status_code == 401
            body = c.get("/cluster", headers={"Authorization": f"Bearer {TOKEN}"}).json()
        ctx.engine.dispose()
    finally:
        writer.close()
        member.stop()

        async def drop() -> None:
            nc = await connect(stream_spec(settings), reconnect=False)
            await nc.jetstream().delete_stream(stream)
            await nc.close()

        asyncio.run(drop())
    assert set(body) == {"replicas", "partitions"}
    [replica] = body["replicas"]
    assert replica["id"] == settings.server.replica_id
    assert replica["url"] == "http://10.0.0.7:3000"
    assert replica["monitor_pid"] == os.getpid()
    assert time.time() - replica["last_seen"] < 60
    assert [p["partition"] for p in body["partitions"]] == [0, 1, 2]
    for p in body["partitions"]:
        assert set(p) == {"partition", "owner", "generation", "lease_expires_at",
                          "lag_events", "lag_seconds"}
        assert p["owner"] == settings.server.replica_id and p["generation"] == 1
        assert p["lease_expires_at"] > time.time()
        assert p["lag_events"] == 0 and p["lag_seconds"] == 0.0
    owned = {s.labels["partition"]: s.value for m in metrics.partition_owned.collect()
             for s in m.samples}
    assert owned == {"0": 1.0, "1": 1.0, "2": 1.0}
    assert len(MODELS) == 4


@pytest.mark.parametrize("backend", ["local"])
def test_one_machine_has_an_empty_cluster(tmp_path: Path, backend: str) -> None:
    settings = load_settings(data_dir=tmp_path, log={"backend": backend}, auth={"tokens": [
        {"name": "v", "role": "viewer", "sha256": hashlib.sha256(TOKEN.encode()).hexdigest()}]})
    engine = make_engine(settings.store_url)
    migrate(engine)
    engine.dispose()
    ctx = build_context(settings)
    with TestClient(create_app(ctx)) as c:
        body = c.get("/cluster", headers={"Authorization": f"Bearer {TOKEN}"}).json()
    ctx.engine.dispose()
    assert body["replicas"] == []
    assert [p["owner"] for p in body["partitions"]] == [None] * 8
