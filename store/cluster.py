"""Several replicas (``log.backend: nats``): the lease on each log partition, the replicas
seen, and the event ids the Monitor has counted.

A lease row names a partition's owner, its generation and its expiry. An owner renews it
(its Monitor's heartbeat, ``renew``, and every tick); another replica takes it over only
once it has expired, and every change of owner adds one to the generation. The Monitor's
commit calls ``LeaseStore.fence`` inside its transaction: an UPDATE that matches only while
the row still holds the owner and generation the Monitor acquired. On PostgreSQL that UPDATE
locks the row until the commit, so a takeover either commits first (the fence matches
nothing: the commit is refused) or waits for the commit (and its new owner reads the
checkpoint that commit wrote). A Monitor paused past its lease therefore cannot commit when
it wakes.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import sqlalchemy as sa

from models.errors import Conflict
from store.engine import insert_rows, put_rows
from store.tables import cluster_replicas, log_event_ids, partition_leases
from store.transaction import Engine, Transaction, reading, transaction


class LeaseLost(Conflict):
    """A commit fenced off: the partition's lease moved to another owner or generation."""

    def __init__(self, partition: int, owner: str, generation: int) -> None:
        super().__init__(f"partition {partition}",
                         f"the lease of generation {generation} held by {owner} was taken over")
        self.partition = partition


@dataclass(frozen=True)
class Lease:
    partition: int
    owner: str
    generation: int
    expires_at: float


@dataclass(frozen=True)
class Replica:
    id: str
    url: str
    monitor_pid: int | None
    last_seen: float


class LeaseStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def acquire(self, partition: int, owner: str, ttl: float, now: float) -> Lease | None:
        """Renew ``owner``'s lease, or take the partition when it is free or expired; None
        while another owner holds it."""
        with transaction(self.engine) as tx:
            conn = tx.connection
            row = conn.execute(sa.select(partition_leases).where(
                partition_leases.c.partition == partition).with_for_update()).first()
            if row is None:
                try:
                    with conn.begin_nested():
                        insert_rows(conn, partition_leases, ("partition", "owner", "generation",
                                                             "expires_at", "updated_at"),
                                    [(partition, owner, 1, now + ttl, now)])
                except sa.exc.IntegrityError:  # another replica created it first
                    return None
                return Lease(partition, owner, 1, now + ttl)
            if row.owner == owner and row.expires_at > now:
                generation = row.generation
            elif row.expires_at <= now:
                generation = row.generation + 1
            else:
                return None
            conn.execute(partition_leases.update().where(
                partition_leases.c.partition == partition).values(
                owner=owner, generation=generation, expires_at=now + ttl, updated_at=now))
            return Lease(partition, owner, generation, now + ttl)

    def renew(self, leases: Iterable[Lease], ttl: float, now: float) -> list[Lease]:
        """Push out the expiry of each lease still held at its generation and not expired
        (the heartbeat's renewal; it never takes a partition nor moves a generation); returns
        those renewed: a lease missing from the answer is lost."""
        renewed = []
        with transaction(self.engine) as tx:
            for lease in leases:
                if tx.connection.execute(partition_leases.update().where(
                        partition_leases.c.partition == lease.partition,
                        partition_leases.c.owner == lease.owner,
                        partition_leases.c.generation == lease.generation,
                        partition_leases.c.expires_at > now).values(
                        expires_at=now + ttl, updated_at=now)).rowcount:
                    renewed.append(Lease(lease.partition, lease.owner, lease.generation,
                                         now + ttl))
        return renewed

    @staticmethod
    def fence(tx: Transaction, leases: Iterable[Lease], now: float) -> None:
        """In the caller's transaction: raise ``LeaseLost`` (the caller's block rolls back)
        unless every lease still holds its owner and generation."""
        for lease in leases:
            matched = tx.connection.execute(partition_leases.update().where(
                partition_leases.c.partition == lease.partition,
                partition_leases.c.owner == lease.owner,
                partition_leases.c.generation == lease.generation).values(
                updated_at=now)).rowcount
            if not matched:
                raise LeaseLost(lease.partition, lease.owner, lease.generation)

    def release(self, leases: Iterable[Lease]) -> None:
        """Give leases up at once (a graceful stop): expired, so the next tick takes them."""
        with transaction(self.engine) as tx:
            for lease in leases:
                tx.connection.execute(partition_leases.update().where(
                    partition_leases.c.partition == lease.partition,
                    partition_leases.c.owner == lease.owner,
                    partition_leases.c.generation == lease.generation).values(expires_at=0.0))

    def all(self) -> list[Lease]:
        with reading(self.engine) as tx:
            rows = tx.connection.execute(sa.select(partition_leases).order_by(
                partition_leases.c.partition)).all()
        return [Lease(r.partition, r.owner, r.generation, r.expires_at) for r in rows]


class ReplicaStore:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def seen(self, replica: str, url: str, monitor_pid: int | None, now: float) -> None:
        with transaction(self.engine) as tx:
            put_rows(tx.connection, cluster_replicas, ("id",), ("url", "monitor_pid",
                                                               "last_seen"),
                     [(replica, url, monitor_pid, now)])

    def left(self, replica: str) -> None:
        """A graceful stop: the replica is no longer one of the live Monitors, so the others'
        share grows and they take its released leases at their next tick."""
        with transaction(self.engine) as tx:
            tx.connection.execute(cluster_replicas.delete().where(
                cluster_replicas.c.id == replica))

    def all(self) -> list[Replica]:
        with reading(self.engine) as tx:
            rows = tx.connection.execute(sa.select(cluster_replicas).order_by(
                cluster_replicas.c.id)).all()
        return [Replica(r.id, r.url, r.monitor_pid, r.last_seen) for r in rows]


class EventIds:
    """The ids of the events the Monitor counted from a partitioned log, kept for as long
    as a spilled record may still come back (the prediction index's retention)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    def known(self, ids: Sequence[str]) -> set[str]:
        found: set[str] = set()
        with reading(self.engine) as tx:
            for i in range(0, len(ids), 500):
                found.update(tx.connection.execute(sa.select(log_event_ids.c.event_id).where(
                    log_event_ids.c.event_id.in_(ids[i:i + 500]))).scalars())
        return found

    @staticmethod
    def add(tx: Transaction, ids: Iterable[tuple[str, int]], now: float) -> None:
        """Each (event id, partition), in the step's transaction."""
        insert_rows(tx.connection, log_event_ids, ("event_id", "partition", "at"),
                    [(event_id, partition, now) for event_id, partition in ids])

    def expire(self, before: float) -> int:
        with transaction(self.engine) as tx:
            return int(tx.connection.execute(log_event_ids.delete().where(
                log_event_ids.c.at < before)).rowcount)
