"""``GET /admin/cluster`` (viewer) answers exactly the contract's fields, from what the
Monitors of the replicas commit (``service.cluster.ClusterMember``)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import CollectorRegistry
from starlette.testclient import TestClient

from monitoring.log.events import PredictionEvent
from monitoring.log.publisher import NatsWriter
from monitoring.log.sink import LogSink, render
from monitoring.metrics import MonitorMetrics
from monitoring.monitor import Monitor
from service.admin.app import create_app
from service.cluster import ClusterMember, cluster_view, stream_spec
from service.context import build_context
from service.settings import load_settings
from store import make_engine, migrate
from tests.natsd import machine_nats
from tests.test_cluster_monitor import MODELS, counts, expected, publish, wait_for
from tests.test_log_publisher import delete_stream

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
        asyncio.run(delete_stream(stream_spec(settings)))
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


class OneStep(Monitor):
    """A Monitor whose tick stops after one step, so a backlog stays for the next one."""

    def tick(self, budget_seconds: float = 0.0) -> Any:
        return super().tick(0.0)


def gauge(metric: Any) -> dict[str, float]:
    return {s.labels["partition"]: s.value for m in metric.collect() for s in m.samples}


def test_partition_lag_in_events_and_seconds(tmp_path: Path) -> None:
    """Records 300 s old, read in batches of 20, one per tick: each held partition's lag, in
    events and in the age of its oldest unread record, in the metrics and in
    ``GET /admin/cluster`` alike."""
    machine_nats()
    stream = "T" + uuid.uuid4().hex[:12].upper()
    settings = load_settings(data_dir=tmp_path, log={
        "backend": "nats", "partitions": 3, "nats": {"stream": stream, "lease_seconds": 30}})
    engine = make_engine(settings.store_url)
    migrate(engine)
    metrics = MonitorMetrics(CollectorRegistry())
    member = ClusterMember(settings, engine, metrics)
    loop = OneStep(engine, member.log, class_labels_of=lambda m, v: None, batch_events=20)
    loop.load()
    writer = NatsWriter(stream_spec(settings), tmp_path / "spill", f"gw-1-{time.time_ns()}",
                        render)
    born = time.time() - 300
    try:
        sink = LogSink(writer)
        for i in range(90):
            sink.emit(PredictionEvent(request_id=f"old{i}", model=MODELS[i % len(MODELS)],
                                      version="v1", variant="champion", time=born + i / 100,
                                      rows=1, latency_seconds=0.001, status="ok",
                                      outputs=[{"value": 1.0}]))
        wait_for(lambda: not writer.unwritten and not writer.spill_pending, what="published")
        before = time.time()
        member.tick(loop)
        events, seconds = gauge(metrics.partition_lag), gauge(metrics.partition_lag_seconds)
        consumed = sum(counts(engine).values())
        assert 0 < consumed < 90 and sum(events.values()) == 90 - consumed
        view = cluster_view(engine, 3)["partitions"]
        for p in view:
            key = str(p["partition"])
            assert p["lag_events"] == events[key] and p["lag_seconds"] == seconds[key]
            if events[key]:  # its oldest unread record is one of ours: 300 s old, give or take
                assert before - born - 1 <= seconds[key] <= time.time() - born
            else:
                assert seconds[key] == 0.0
        assert any(events.values())
        for _ in range(10):
            member.tick(loop)
        assert set(gauge(metrics.partition_lag).values()) == {0.0}
        assert set(gauge(metrics.partition_lag_seconds).values()) == {0.0}
    finally:
        writer.close()
        member.stop()
        engine.dispose()
        asyncio.run(delete_stream(stream_spec(settings)))


def test_a_graceful_stop_hands_the_partitions_over_at_the_next_tick(tmp_path: Path) -> None:
    """Two replicas split 4 partitions; one stops (SIGTERM): at the other's next tick it
    holds all 4, not a lease later (the stopped one no longer counts among the live)."""
    machine_nats()
    stream = "T" + uuid.uuid4().hex[:12].upper()
    members, loops = [], []
    for name in ("a", "b"):
        s = load_settings(data_dir=tmp_path, log={
            "backend": "nats", "partitions": 4, "nats": {"stream": stream,
                                                         "lease_seconds": 60}})
        s.server.replica_id = name  # two replicas in one process (PostgreSQL's check aside)
        if not members:
            engine = make_engine(s.store_url)
            migrate(engine)
        members.append(ClusterMember(s, engine))
        loops.append(Monitor(engine, members[-1].log, class_labels_of=lambda m, v: None))
    a, b = members
    try:
        for _ in range(2):
            for member, loop in zip(members, loops, strict=True):
                member.tick(loop)
        assert len(a.owner.held) == len(b.owner.held) == 2
        assert sorted([*a.owner.held, *b.owner.held]) == [0, 1, 2, 3]
        a.stop()
        b.tick(loops[1])
        assert sorted(b.owner.held) == [0, 1, 2, 3]
        assert [r.id for r in b.replicas.all()] == ["b"]
    finally:
        b.stop()
        engine.dispose()
        asyncio.run(delete_stream(stream_spec(b.settings)))


def test_a_replica_is_seen_before_its_first_lease_and_while_its_loop_lives(
        tmp_path: Path) -> None:
    """A new replica's Monitor records itself as seen before it takes its first lease (the
    others count it among the live while its first, slow, tick runs); its heartbeat keeps
    it seen and its leases renewed between ticks, and stops both, counted once, when the loop
    goes past ``log.nats.max_tick_seconds`` without completing a tick."""
    machine_nats()
    stream = "T" + uuid.uuid4().hex[:12].upper()
    settings = load_settings(data_dir=tmp_path, log={
        "backend": "nats", "partitions": 2, "nats": {"stream": stream, "lease_seconds": 0.9,
                                                     "max_tick_seconds": 2.0}})
    engine = make_engine(settings.store_url)
    migrate(engine)
    registry = CollectorRegistry()
    metrics = MonitorMetrics(registry)
    member = ClusterMember(settings, engine, metrics)

    def stalls() -> float | None:
        return registry.get_sample_value("vigil_monitor_loop_stalls_total")

    seen_at_first_lease: list[list[str]] = []
    acquire = member.owner.store.acquire

    def first_lease(*args: Any, **kwargs: Any) -> Any:
        if not seen_at_first_lease:
            seen_at_first_lease.append([r.id for r in member.replicas.all()])
        return acquire(*args, **kwargs)

    member.owner.store.acquire = first_lease  # type: ignore[method-assign]
    loop = Monitor(engine, member.log, class_labels_of=lambda m, v: None)
    loop.load()

    def last_seen() -> float:
        return member.replicas.all()[0].last_seen

    def expiry() -> float:
        return min(lease.expires_at for lease in member.owner.store.all())

    try:
        member.tick(loop)
        assert seen_at_first_lease == [[settings.server.replica_id]]
        assert sorted(member.owner.held) == [0, 1]
        seen, expires = last_seen(), expiry()
        wait_for(lambda: last_seen() > seen and expiry() > expires, timeout=10,
                 what="the heartbeat renews and is seen with no tick")
        assert stalls() == 0
        wait_for(lambda: stalls() == 1, timeout=10,
                 what="no tick for longer than max_tick_seconds: the renewals stop")
        seen, expires = last_seen(), expiry()
        time.sleep(1.0)  # three heartbeats' time
        assert (last_seen(), expiry()) == (seen, expires), "a stalled loop is not renewed"
        member.tick(loop)  # the loop comes round: renewed and seen again
        seen = last_seen()
        wait_for(lambda: last_seen() > seen, timeout=10, what="seen again")
        assert stalls() == 1
    finally:
        member.stop()
        engine.dispose()
        asyncio.run(delete_stream(stream_spec(settings)))


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
