"""The Monitor's status with several replicas (``monitoring/status.py``): each replica's
Monitor keeps its own, ``…/stats`` merges them (lag and consumed records add up, the worst
lag in seconds, each replica's last tick listed) and a restarted one resumes its own count;
one machine's keeps the shape it always had."""

from __future__ import annotations

import time
from pathlib import Path

import sqlalchemy as sa

from monitoring.log.reader import LocalEventLog
from monitoring.log.sink import LogSink, render
from monitoring.log.writer import SegmentWriter
from monitoring.monitor import Monitor, read_stats
from monitoring.status import FIELDS, view
from service.cli.status import replica_lines
from tests.test_monitor import LABELS, emit


def written(directory: Path, stream: str, n: int, first: int = 0) -> None:
    writer = SegmentWriter(directory, stream, render)
    sink = LogSink(writer)
    for i in range(first, first + n):
        emit(sink, i)
    writer.close()


def replica_monitor(engine: sa.Engine, log_dir: Path, replica: str | None) -> Monitor:
    m = Monitor(engine, LocalEventLog(log_dir), class_labels_of=lambda model, v: LABELS,
                replica=replica)
    m.load()
    return m


def test_each_replica_keeps_its_own_status_and_stats_merge_them(engine: sa.Engine,
                                                                tmp_path: Path) -> None:
    # two replicas' Monitors, each over its own part of the log (its partitions)
    written(tmp_path / "a", "gw1-1-1", 300)
    written(tmp_path / "b", "gw1-2-1", 100, first=1000)
    a = replica_monitor(engine, tmp_path / "a", "replica-a")
    b = replica_monitor(engine, tmp_path / "b", "replica-b")
    a.tick()
    b.tick()
    monitor = read_stats(engine, "m")["monitor"]
    assert monitor["consumed_total"] == 400, "both replicas' records, not the last writer's"
    assert monitor["lag_events"] == 0
    assert [r["replica"] for r in monitor["replicas"]] == ["replica-a", "replica-b"]
    assert [r["consumed_total"] for r in monitor["replicas"]] == [300, 100]
    assert monitor["updated_at"] == min(r["updated_at"] for r in monitor["replicas"])

    # a restarted replica resumes its own count, not the other's
    written(tmp_path / "b", "gw1-2-2", 50, first=2000)
    b = replica_monitor(engine, tmp_path / "b", "replica-b")
    b.tick()
    monitor = read_stats(engine, "m")["monitor"]
    assert [r["consumed_total"] for r in monitor["replicas"]] == [300, 150]
    assert monitor["consumed_total"] == 450


def test_one_machine_keeps_its_shape(engine: sa.Engine, tmp_path: Path) -> None:
    written(tmp_path, "gw1-1-1", 40)
    replica_monitor(engine, tmp_path, None).tick()
    monitor = read_stats(engine, "m")["monitor"]
    assert set(monitor) == set(FIELDS)
    assert monitor["consumed_total"] == 40 and monitor["lag_events"] == 0


def test_a_stale_replica_is_listed_but_not_merged() -> None:
    now = time.time()
    merged = view([
        {"replica": "a", "lag_events": 5, "lag_seconds": 0.5, "updated_at": now},
        {"replica": "gone", "lag_events": 900, "lag_seconds": 400.0, "updated_at": now - 3600},
        {"replica": "b", "lag_events": 2, "lag_seconds": 2.0, "updated_at": now - 1}])
    assert (merged["lag_events"], merged["lag_seconds"]) == (7, 2.0)
    assert merged["updated_at"] == now - 1
    assert {r["replica"]: r["stale"] for r in merged["replicas"]} == {
        "a": False, "b": False, "gone": True}
    assert view([])["lag_events"] is None


def test_vigil_status_names_each_replicas_monitor() -> None:
    now = time.time()
    merged = view([{"replica": "a", "lag_events": 5, "lag_seconds": 0.5, "updated_at": now - 1},
                   {"replica": "gone", "lag_events": 9, "updated_at": now - 3600}])
    a, gone = replica_lines(merged, now)
    assert a == "Monitor a: lag 5 events, 0.5 s; last tick 1.0 s ago"
    assert gone.startswith("Monitor gone: lag 9 events") and "stale" in gone
    assert replica_lines(view([{"lag_events": 0, "updated_at": now}]), now) == []


def test_a_gone_replicas_status_is_forgotten(engine: sa.Engine) -> None:
    """A replica that stopped (its own status dropped at its stop) or was killed long ago
    (dropped by age) no longer shows in ``…/stats``; one machine's status is never dropped.
    On Kubernetes the replica id is the pod name, new on every rollout."""
    from store import MonitorStateStore, reading

    state = MonitorStateStore(engine)
    now = time.time()
    state.put_status({"lag_events": 1, "updated_at": now - 7200}, now - 7200, "pod-old")
    state.put_status({"lag_events": 2, "updated_at": now}, now, "pod-a")
    state.put_status({"lag_events": 3, "updated_at": now}, now, "pod-b")
    state.put_status({"lag_events": 4, "updated_at": now - 7200}, now - 7200)

    def replicas() -> list[str]:
        with reading(engine) as tx:
            return [r["replica"] for r in view(state.statuses(tx))["replicas"]]

    assert replicas() == ["pod-a", "pod-b", "pod-old"]
    assert state.drop_statuses(before=now - 3600) == 1
    assert state.drop_statuses(replica="pod-b") == 1
    assert replicas() == ["pod-a"]
    with reading(engine) as tx:
        assert [s["lag_events"] for s in state.statuses(tx)] == [4, 2]
