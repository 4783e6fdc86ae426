"""A 3-node JetStream cluster (stream with 3 replicas): killing the stream's leader under
load loses nothing and counts nothing twice. The publisher's unacknowledged records spill
and are published again with the same ``Nats-Msg-Id`` until the new leader takes them."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from monitoring.cluster import PartitionOwner, cluster_tick
from monitoring.log.consumer import NatsEventLog
from monitoring.log.jetstream import StreamSpec, connect, ensure_stream
from monitoring.log.publisher import NatsWriter
from monitoring.log.sink import LogSink, render
from monitoring.monitor import Monitor
from store import EventIds, LeaseStore, make_engine, migrate
from tests.natsd import NatsCluster
from tests.test_cluster_monitor import MODELS, counts, event, expected, wait_for

pytestmark = pytest.mark.e2e


async def leader(spec: StreamSpec, timeout: float = 30.0) -> str:
    """Create the stream and wait for its leader (publishing before one is elected is
    answered NoResponders)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            nc = await connect(spec, reconnect=False)
            try:
                js = nc.jetstream(timeout=2)
                await ensure_stream(js, spec)
                info = await js.stream_info(spec.name)
                if info.cluster is not None and info.cluster.leader:
                    return str(info.cluster.leader)
            finally:
                await nc.close()
        except Exception:
            if time.monotonic() > deadline:
                raise
        await asyncio.sleep(0.25)


def test_killing_the_stream_leader_loses_nothing(tmp_path: Path) -> None:
    nodes = NatsCluster(tmp_path / "nats").start()
    spec = StreamSpec(url=nodes.url, name="CLUSTERED", partitions=2, timeout=1.0, replicas=3)
    engine = make_engine(f"sqlite:///{tmp_path / 'vigil.db'}")
    migrate(engine)
    writer = None
    log = None
    try:
        first = asyncio.run(leader(spec))
        writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render)
        sink = LogSink(writer)
        n = 0
        killed_at = None
        for _ in range(1500):
            sink.emit(event(MODELS[n % len(MODELS)], n))
            n += 1
            time.sleep(0.002)
            if n == 500:
                nodes.kill(first)
                killed_at = time.monotonic()
        assert killed_at is not None
        wait_for(lambda: not writer.spill_pending and not writer.unwritten, timeout=60,
                 what="everything acknowledged by the new leader")
        recovered = time.monotonic() - killed_at
        second = asyncio.run(leader(spec))
        assert second != first
        owner = PartitionOwner(LeaseStore(engine), "r1", spec.partitions, ttl=10)
        log = NatsEventLog(spec, EventIds(engine), lambda: owner.held)
        loop = Monitor(engine, log, class_labels_of=lambda m, v: None)
        loop.load()

        def counted() -> bool:
            cluster_tick(loop, owner)
            return counts(engine) == expected(n)

        wait_for(counted, what="the Monitor counts every record once")
        assert not writer.dropped
        print(f"leader {first} killed: {writer.spilled} records spilled, all acknowledged by "
              f"{second} {recovered:.1f} s after the kill")
    finally:
        if writer is not None:
            writer.close()
        if log is not None:
            log.close()
        nodes.stop()
