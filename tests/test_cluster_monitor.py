"""The Monitor on the NATS log: exact counts from the partitions it leases, an event id
counted once even when the stream holds it twice, and (PostgreSQL) two Monitors where the
owner is SIGSTOPped past its lease: the other takes over, and the woken owner's commit is
refused and counted, the counts exact."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest
import sqlalchemy as sa

from monitoring.cluster import PartitionOwner, cluster_tick
from monitoring.log.consumer import NatsEventLog
from monitoring.log.events import PredictionEvent
from monitoring.log.jetstream import MSG_ID, StreamSpec, connect
from monitoring.log.partitions import partition_of, subject
from monitoring.log.publisher import NatsWriter
from monitoring.log.sink import LogSink, render
from monitoring.monitor import Monitor
from store import EventIds, LeaseStore, MonitorStateStore, make_engine, migrate, reading
from tests.natsd import machine_nats

ROOT = Path(__file__).resolve().parents[1]
MODELS = ("iris", "wine", "breast_cancer", "diabetes")


def event(model: str, i: int) -> PredictionEvent:
    return PredictionEvent(request_id=f"r{i}", model=model, version="v1", variant="champion",
                           time=time.time(), rows=1, latency_seconds=0.001, status="ok",
                           outputs=[{"value": float(i)}])


def publish(writer: NatsWriter, start: int, n: int) -> None:
    sink = LogSink(writer)
    for i in range(start, start + n):
        sink.emit(event(MODELS[i % len(MODELS)], i))
    deadline = time.monotonic() + 20
    while writer.unwritten or writer.spill_pending:
        assert time.monotonic() < deadline
        time.sleep(0.02)


def counts(engine: sa.Engine) -> dict[str, int]:
    with reading(engine) as tx:
        saved = MonitorStateStore(engine).load(tx)
    return {key[0]: doc["requests"] for key, doc in saved.stats.items()}


def wait_for(cond, timeout: float = 30.0, what: str = "") -> float:  # type: ignore[no-untyped-def]
    start = time.monotonic()
    while not cond():
        assert time.monotonic() - start < timeout, f"timed out: {what}"
        time.sleep(0.05)
    return time.monotonic() - start


def expected(n: int) -> dict[str, int]:
    return {m: len(range(k, n, len(MODELS))) for k, m in enumerate(MODELS)}


@pytest.fixture
def spec() -> Iterator[StreamSpec]:
    s = StreamSpec(url=machine_nats(), name="T" + uuid.uuid4().hex[:12].upper(), partitions=3)
    yield s

    async def drop() -> None:
        from nats.js.errors import NotFoundError

        nc = await connect(s, reconnect=False)
        try:
            await nc.jetstream().delete_stream(s.name)
        except NotFoundError:  # a test skipped before it made one
            pass
        finally:
            await nc.close()

    asyncio.run(drop())



def tear_down(procs: dict[str, Any], writer: Any, engine: sa.Engine, admin: sa.Engine,
              schema: str) -> None:
    """Kill the test's Monitor processes, close its publisher, drop its schema."""
    for p in procs.values():
        p.kill()
        p.wait()
    writer.close()
    engine.dispose()
    with admin.begin() as conn:
        conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
    admin.dispose()

def test_one_monitor_counts_each_event_once(tmp_path: Path, spec: StreamSpec) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'vigil.db'}")
    migrate(engine)
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render)
    publish(writer, 0, 400)

    def monitor() -> tuple[Monitor, PartitionOwner, NatsEventLog]:
        owner = PartitionOwner(LeaseStore(engine), "r1", spec.partitions, ttl=10)
        log = NatsEventLog(spec, EventIds(engine), lambda: owner.held)
        loop = Monitor(engine, log, class_labels_of=lambda m, v: None, batch_events=150)
        loop.load()
        return loop, owner, log

    loop, owner, log = monitor()
    while (r := cluster_tick(loop, owner)) is not None and r.lines:
        pass
    assert counts(engine) == expected(400)
    assert sorted(owner.held) == list(range(spec.partitions))

    # the same event again under another message id (a spill forwarded after the window)
    async def republish() -> None:
        nc = await connect(spec, reconnect=False)
        raw = render(("p", event("iris", 0), 1.0)).rstrip(b"\n")
        rec = orjson.loads(raw)
        first = await nc.jetstream().get_msg(spec.name, seq=1)
        rec["id"] = orjson.loads(first.data)["id"]  # an id already counted
        await nc.jetstream().publish(subject(spec.name, partition_of(
            orjson.loads(first.data)["data"]["model"], spec.partitions)),
            orjson.dumps(rec), headers={MSG_ID: "another"})
        await nc.close()

    asyncio.run(republish())
    cluster_tick(loop, owner)
    assert log.duplicates == 1 and counts(engine) == expected(400)
    log.close()

    # a restarted Monitor resumes at the committed checkpoints: nothing twice
    publish(writer, 400, 100)
    writer.close()
    loop, owner, log = monitor()
    for _ in range(5):
        cluster_tick(loop, owner)
    assert counts(engine) == expected(500)
    assert loop.status.lag_events == 0
    log.close()


def postgres_url() -> str:
    url = os.environ.get("VIGIL_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("VIGIL_TEST_POSTGRES_URL is not set: two Monitors need PostgreSQL")
    return url


def proc_state(pid: int) -> str:
    return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]


@pytest.mark.e2e
def test_a_paused_owner_cannot_commit_after_a_takeover(tmp_path: Path,
                                                       spec: StreamSpec) -> None:
    base = postgres_url()
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"{base}?options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    migrate(engine)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    status = {r: tmp_path / f"{r}.json" for r in ("a", "b")}
    flag = tmp_path / "pause-a"

    def start(replica: str) -> None:
        procs[replica] = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster_proc", url, spec.name, str(spec.partitions),
             replica, str(status[replica]), str(flag if replica == "a" else tmp_path / "no")],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def state(replica: str) -> dict:
        try:
            return json.loads(status[replica].read_text())
        except (FileNotFoundError, ValueError):
            return {"held": [], "fenced": 0}

    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render)
    everyone = list(range(spec.partitions))
    try:
        start("a")
        wait_for(lambda: state("a")["held"] == everyone, what="a holds every partition")
        start("b")
        wait_for(lambda: status["b"].exists(), what="b runs")
        publish(writer, 0, 300)
        wait_for(lambda: counts(engine) == expected(300), what="a counts 300")
        assert state("b")["held"] == []

        flag.touch()
        publish(writer, 300, 200)  # a reads them and stops before its commit
        wait_for(lambda: proc_state(procs["a"].pid) == "T", what="a stopped")
        stopped = time.monotonic()
        wait_for(lambda: state("b")["held"] == everyone, what="b takes over")
        failover = time.monotonic() - stopped
        wait_for(lambda: counts(engine) == expected(500), what="b counts 500")

        os.kill(procs["a"].pid, signal.SIGCONT)
        wait_for(lambda: state("a")["fenced"] >= 1, what="a's commit refused")
        assert state("a")["held"] == []
        publish(writer, 500, 100)
        wait_for(lambda: counts(engine) == expected(600), what="b counts 600")
        time.sleep(1.0)  # nothing more arrives late
        assert counts(engine) == expected(600)
        assert state("a")["fenced"] == 1 and state("b")["fenced"] == 0
        print(f"failover after SIGSTOP: {failover:.2f} s (lease 2 s, tick 0.1 s)")
        assert failover < 2.0 + 2.0
    finally:
        tear_down(procs, writer, engine, admin, schema)


def test_counts_are_exact_through_a_nats_outage(tmp_path: Path) -> None:
    from tests.natsd import NatsServer

    server = NatsServer(tmp_path / "nats").start()
    spec = StreamSpec(url=server.url, name="OUTAGE", partitions=2, timeout=0.5)
    engine = make_engine(f"sqlite:///{tmp_path / 'vigil.db'}")
    migrate(engine)
    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render)
    sink = LogSink(writer)
    owner = PartitionOwner(LeaseStore(engine), "r1", spec.partitions, ttl=10)
    log = NatsEventLog(spec, EventIds(engine), lambda: owner.held)
    loop = Monitor(engine, log, class_labels_of=lambda m, v: None)
    loop.load()
    failed_ticks = 0

    def tick() -> None:
        nonlocal failed_ticks
        try:
            cluster_tick(loop, owner)
        except Exception:  # NATS away: the service counts a failed tick and reloads
            failed_ticks += 1
            loop.load()

    try:
        n = 0
        for phase in ("up", "down", "up again"):
            if phase == "down":
                server.stop()
            elif phase == "up again":
                server.start()
            for _ in range(300):
                sink.emit(event(MODELS[n % len(MODELS)], n))
                n += 1
                time.sleep(0.002)
                if n % 50 == 0:
                    tick()
        wait_for(lambda: not writer.spill_pending and not writer.unwritten, what="forwarded")

        def caught_up() -> bool:
            tick()
            return counts(engine) == expected(n)

        wait_for(caught_up, what="the Monitor counts every record")
        assert writer.spilled > 0 and writer.forwarded == writer.spilled
        assert not writer.dropped
    finally:
        writer.close()
        log.close()
        server.stop()


@pytest.mark.e2e
def test_a_killed_owner_is_replaced_within_its_lease(tmp_path: Path, spec: StreamSpec) -> None:
    """SIGKILL the owner under load: the other replica holds every partition within the
    lease plus a tick or two, and the counts are exact (nothing skipped, nothing twice)."""
    base = postgres_url()
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(base)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    url = f"{base}?options=-csearch_path%3D{schema}"
    engine = make_engine(url)
    migrate(engine)
    procs: dict[str, subprocess.Popen[bytes]] = {}
    status = {r: tmp_path / f"{r}.json" for r in ("a", "b")}

    def start(replica: str) -> None:
        procs[replica] = subprocess.Popen(
            [sys.executable, "-m", "tests.cluster_proc", url, spec.name, str(spec.partitions),
             replica, str(status[replica]), str(tmp_path / "no")],
            cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)})

    def held(replica: str) -> list[int]:
        try:
            return list(json.loads(status[replica].read_text())["held"])
        except (FileNotFoundError, ValueError):
            return []

    writer = NatsWriter(spec, tmp_path / "spill", f"gw-1-{time.time_ns()}", render)
    everyone = list(range(spec.partitions))
    try:
        start("a")
        wait_for(lambda: held("a") == everyone, what="a holds every partition")
        start("b")
        wait_for(lambda: status["b"].exists(), what="b runs")
        publish(writer, 0, 1000)
        procs["a"].kill()  # while it is counting them
        killed = time.monotonic()
        procs["a"].wait()
        wait_for(lambda: held("b") == everyone, what="b takes over")
        failover = time.monotonic() - killed
        publish(writer, 1000, 200)
        wait_for(lambda: counts(engine) == expected(1200), what="b counts 1200")
        time.sleep(1.0)
        assert counts(engine) == expected(1200)
        print(f"failover after SIGKILL: {failover:.2f} s (lease 2 s, tick 0.1 s)")
        assert failover < 2.0 + 2.0
    finally:
        tear_down(procs, writer, engine, admin, schema)
