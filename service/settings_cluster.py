"""The cluster sections of the Settings: where the prediction log lives (the local segments,
or NATS JetStream) and how a replica names itself. Kept apart from ``service.settings``
(which imports them); the design is docs/architecture.md, Scale-out."""

from __future__ import annotations

import socket
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NatsSettings(_Section):
    url: str = Field("nats://127.0.0.1:4222", description="The NATS server (or a "
                     "comma-separated list of a cluster's servers) the prediction log is "
                     "published to and read from when `log.backend` is `nats`.")
    stream: str = Field("VIGIL", pattern=r"^[A-Za-z0-9_-]{1,64}$", description="The "
                        "JetStream stream; its subjects are `<stream>.events.<partition>` "
                        "(a separate name isolates a test or an environment).")
    duplicate_window: float = Field(600.0, gt=0, description="Seconds JetStream de-duplicates "
                                    "a re-published record by its `Nats-Msg-Id` (the event "
                                    "id); the Monitor also ignores an event id it has counted, "
                                    "so a spill forwarded later is still counted once.")
    replicas: int = Field(1, ge=1, le=5, description="Copies JetStream keeps of the stream "
                          "when Vigil creates it (3 on a 3-node cluster: losing a node loses "
                          "nothing); a stream that exists is left as it is.")
    lease_seconds: float = Field(10.0, gt=0, description="A Monitor's lease on a partition: "
                                 "renewed every third of it by the Monitor's heartbeat thread "
                                 "(and every tick), however long a tick takes; taken over by "
                                 "another replica's Monitor once this long has passed without "
                                 "a renewal (a failover takes about this plus a tick).")
    max_tick_seconds: float = Field(60.0, gt=0, description="How long a Monitor's loop may "
                                    "go without completing a tick (Kafka's "
                                    "`max.poll.interval.ms`): past it, its heartbeat stops "
                                    "renewing its leases, so a wedged loop loses its "
                                    "partitions to another replica a lease later (logged, and "
                                    "counted in `vigil_monitor_loop_stalls_total`); it renews "
                                    "again once a tick completes. Keep it several leases: a "
                                    "tick slower than it (a takeover's reload on a busy "
                                    "machine) moves the partitions.")
    connect_timeout_seconds: float = Field(2.0, gt=0, description="How long a connection "
                                           "attempt, and a batch's acknowledgements, may take "
                                           "before the records spill to the local segments.")


def replica_id_default() -> str:
    return socket.gethostname() or "localhost"


class ClusterLogSettings(_Section):
    """The keys of ``log`` that choose its backend (mixed into ``LogSettings``)."""

    backend: Literal["local", "nats"] = Field("local", description="`local`: segment files "
                                              "under `log.dir`, one Monitor (one machine). "
                                              "`nats`: the log is a NATS JetStream stream, "
                                              "records spill to the local segments while NATS "
                                              "is unreachable (docs/architecture.md, Scale-out).")
    nats: NatsSettings = Field(NatsSettings(), description="The JetStream stream of the `nats` "
                               "backend.")
    partitions: int = Field(8, ge=1, le=1024, description="Partitions of the `nats` log: a "
                            "model's records go to partition = a stable hash of its name, and "
                            "each partition is read by one Monitor at a time (its lease).")


def cluster_problem(replica_id_set: bool, store_url: str, backend: str) -> str | None:
    """Why this combination must not start, or None. Several replicas need a shared store and
    a shared log: a replica id with SQLite or with the local log would put two Monitors on one
    machine's files, or let each count only its own traffic."""
    if not replica_id_set:
        return None
    bad = []
    if store_url.startswith("sqlite"):
        bad.append("store.url is SQLite")
    if backend == "local":
        bad.append("log.backend is local")
    if not bad:
        return None
    return ("server.replica_id is set (several replicas) but " + " and ".join(bad)
            + ": several replicas need store.url on PostgreSQL and log.backend: nats")
