"""The cluster pieces of a process, built from the Settings (``log.backend: nats``): the
worker's NATS publisher, the Monitor's leases and NATS reader (``ClusterMember``), and the
view ``GET /admin/cluster`` answers. docs/architecture.md, Scale-out."""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import Any

from monitoring.cluster import Heartbeat, OwnedPendingLabels, PartitionOwner, cluster_tick
from monitoring.drift.tracker import DriftTracker
from monitoring.log.consumer import NatsEventLog
from monitoring.log.jetstream import StreamSpec
from monitoring.log.publisher import NatsWriter
from monitoring.metrics import GatewayMetrics, MonitorMetrics
from monitoring.monitor import Monitor
from monitoring.retrain.triggers import Triggers
from service.settings import Settings
from store import (
    Engine,
    EventIds,
    LeaseStore,
    MonitorStateStore,
    ReplicaStore,
    reading,
    transaction,
)

HEARTBEATS_PER_LEASE = 3  # a lease survives two heartbeats missed in a row


def stream_spec(settings: Settings) -> StreamSpec:
    n = settings.log.nats
    return StreamSpec(url=n.url, name=n.stream, partitions=settings.log.partitions,
                      duplicate_window=n.duplicate_window, timeout=n.connect_timeout_seconds,
                      replicas=n.replicas, max_age=settings.log.retention_hours * 3600)


def nats_writer(settings: Settings, stream: str, render: Callable[[Any], bytes],
                metrics: GatewayMetrics | None, on_drop: Callable[[str, int], None],
                on_write: Callable[[int], None]) -> NatsWriter:
    """This worker's publisher; its spill is ``<log dir>/spill/<stream>/``, held under
    ``log.retention_max_bytes`` as the local log is."""

    def on_spill(n: int) -> None:
        if metrics is not None:
            metrics.log_spilled.inc(n)

    def on_forward(n: int) -> None:
        if metrics is not None:
            metrics.log_forwarded.inc(n)

    lg = settings.log
    return NatsWriter(stream_spec(settings), settings.log_dir / "spill", stream, render,
                      queue_size=lg.queue_size, fsync_seconds=lg.fsync_seconds,
                      spill_max_bytes=lg.retention_max_bytes, on_drop=on_drop,
                      on_write=on_write, on_spill=on_spill, on_forward=on_forward,
                      keys=settings.log.encryption.keys())


# a replica's Monitor status not written for this long is dropped (killed, or its pod name
# retired by a rollout); until then ``…/stats`` lists it as stale after a minute
STATUS_FORGET_SECONDS = 3600.0


class ClusterMember:
    """The Monitor process's part among several replicas: the partitions it leases and their
    heartbeat, the NATS log over them, and what it publishes for ``GET /admin/cluster`` (when
    it was last seen, each held partition's lag) and the metrics."""

    def __init__(self, settings: Settings, engine: Engine,
                 metrics: MonitorMetrics | None = None) -> None:
        self.settings = settings
        self.replica = settings.server.replica_id
        n = settings.log.nats
        self.owner = PartitionOwner(LeaseStore(engine), self.replica, settings.log.partitions,
                                    n.lease_seconds, live=self._live,
                                    max_tick=n.max_tick_seconds, on_stall=self._stalled)
        self.log = NatsEventLog(stream_spec(settings), EventIds(engine), self.owner.leases,
                                keys=settings.log.encryption.keys(),
                                on_bad_frame=self._bad_frame)
        self.replicas = ReplicaStore(engine)
        self.state = MonitorStateStore(engine)
        self.engine = engine
        self.metrics = metrics
        self.event_ids = EventIds(engine)
        self._expired_at = 0.0
        self.heartbeat: Heartbeat | None = None

    def tick(self, loop: Monitor) -> None:
        # seen before it takes a lease, so the others count it among the live at once
        self._seen()
        if self.heartbeat is None:
            interval = self.settings.log.nats.lease_seconds / HEARTBEATS_PER_LEASE
            self.heartbeat = Heartbeat(self._beat, interval).start()
        if not isinstance(loop.pending, OwnedPendingLabels):  # the others' owners' work
            loop.pending = OwnedPendingLabels(self.owner)
        if isinstance(loop.triggers, Triggers):
            loop.triggers.owns = self.owner.owns
        if isinstance(loop.drift, DriftTracker):  # rebaselines at the model's owner
            loop.drift.owns = self.owner.owns
        if loop.kpis is not None:  # waiting KPI outcomes are joined at their model's owner
            loop.kpis.owns = self.owner.owns
        cluster_tick(loop, self.owner, self._fenced)
        now = time.time()
        if now - self._expired_at >= 60.0:  # as long as the prediction index keeps requests
            self._expired_at = now
            self.event_ids.expire(before=now - loop.index_retention_seconds)
            self.state.drop_statuses(before=now - STATUS_FORGET_SECONDS)
        lag = held_lag(self.log.lag, set(self.owner.held), now)
        with transaction(self.engine) as tx:
            for p, (events, seconds) in lag.items():
                self.state.put_document(tx, partition_doc(p), {
                    "lag_events": events, "lag_seconds": seconds}, now)
        if self.metrics is not None:
            for p in range(self.owner.partitions):
                events, seconds = lag.get(p, (0, 0.0))
                self.metrics.partition_owned.labels(str(p)).set(int(p in self.owner.held))
                self.metrics.partition_lag.labels(str(p)).set(events)
                self.metrics.partition_lag_seconds.labels(str(p)).set(seconds)

    def _seen(self) -> None:
        self.replicas.seen(self.replica, self.settings.server.base_url, os.getpid(),
                           time.time())

    def _beat(self) -> None:
        """The heartbeat's thread: renew the leases and be seen, while the loop is live."""
        if self.owner.beat():
            self._seen()

    def _stalled(self) -> None:
        if self.metrics is not None:
            self.metrics.loop_stalls.inc()

    def _live(self) -> int:
        """Replicas whose Monitor was seen within a lease, this one included."""
        since = time.time() - self.settings.log.nats.lease_seconds
        return len({r.id for r in self.replicas.all() if r.last_seen >= since}
                   | {self.replica})

    def _bad_frame(self, seq: int) -> None:
        if self.metrics is not None:
            self.metrics.bad_frames.inc()

    def _fenced(self, partition: int) -> None:
        if self.metrics is not None:
            self.metrics.fenced_commits.inc()

    def stop(self) -> None:
        """A graceful stop: this replica leaves the live ones and its leases go at once, so
        the others take its partitions a tick later instead of a lease later."""
        if self.heartbeat is not None:
            self.heartbeat.stop()
        try:
            self.replicas.left(self.replica)
            self.owner.release()
            self.state.drop_statuses(replica=self.replica)
        finally:
            self.log.close()


def held_lag(lag: dict[int, tuple[int, float | None]], held: set[int],
             now: float) -> dict[int, tuple[int, float]]:
    """Each held partition's lag as ``(events, seconds)``: the records not yet consumed and
    the age of the oldest of them (0 when there is none, or its time was unreadable).

    >>> held_lag({0: (3, 100.0), 1: (0, None), 2: (5, 90.0)}, {0, 1}, now=130.0)
    {0: (3, 30.0), 1: (0, 0.0)}
    """
    return {p: (events, max(0.0, now - oldest) if events and oldest else 0.0)
            for p, (events, oldest) in lag.items() if p in held}


def partition_doc(partition: int) -> str:
    return f"partition.{partition}"


def cluster_view(engine: Engine, partitions: int) -> dict[str, Any]:
    """``GET /admin/cluster``: the replicas seen, and each partition's lease and lag."""
    leases = {lease.partition: lease for lease in LeaseStore(engine).all()}
    state = MonitorStateStore(engine)
    with reading(engine) as tx:
        lag = {p: state.get_document(tx, partition_doc(p)) or {} for p in range(partitions)}
    return {
        "replicas": [{"id": r.id, "url": r.url, "last_seen": r.last_seen,
                      "monitor_pid": r.monitor_pid} for r in ReplicaStore(engine).all()],
        "partitions": [{
            "partition": p,
            "owner": leases[p].owner if p in leases else None,
            "generation": leases[p].generation if p in leases else None,
            "lease_expires_at": leases[p].expires_at if p in leases else None,
            "lag_events": lag[p].get("lag_events"),
            "lag_seconds": lag[p].get("lag_seconds"),
        } for p in range(partitions)],
    }
