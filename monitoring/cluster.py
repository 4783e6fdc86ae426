"""The Monitor of one replica among several (``log.backend: nats``): which partitions of the
log it holds, and its tick around the one-machine loop.

Every tick ``PartitionOwner.renew`` renews the leases it holds and takes any partition that is
free or whose lease expired (``store.cluster.LeaseStore``). When the set of partitions or a
generation changed, the loop reloads its state from the store, so a partition taken over is
read from the checkpoint its last owner committed. Every step's commit is fenced by the
leases (``monitoring.log.consumer.NatsEventLog.commit``): a Monitor that was paused past its
lease and wakes between its read and its commit has that commit refused (``LeaseLost``); it
counts it, steps down from the partition and reloads.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from monitoring.log.partitions import partition_of
from monitoring.monitor import Monitor, StepResult
from store import Lease, LeaseLost, LeaseStore, PendingLabels, Transaction
from store.predictions import HeldLabel

log = logging.getLogger("vigil.monitor")


class PartitionOwner:
    """The leases this replica holds, by partition."""

    def __init__(self, leases: LeaseStore, replica: str, partitions: int, ttl: float,
                 clock: Callable[[], float] = time.time,
                 live: Callable[[], int] | None = None) -> None:
        """``live()``: how many replicas' Monitors run (this one included); with it each
        holds at most its share, ceil(partitions / live), and gives up what is over it."""
        self.store = leases
        self.live = live
        self.replica = replica
        self.partitions = partitions
        self.ttl = ttl
        self.clock = clock
        self.held: dict[int, Lease] = {}
        self.fenced = 0  # commits refused because a lease had moved on

    def renew(self) -> bool:
        """Renew what is held, take what is free or expired; True when anything changed
        (a partition gained or lost, or a generation moved)."""
        now = self.clock()
        changed = False
        share = self.partitions
        if self.live is not None:
            share = -(-self.partitions // max(1, self.live()))
        over = sorted(self.held)[share:]
        if over:  # a replica joined: hand partitions over between two commits
            log.info("handing over partitions %s (share %d)", over, share)
            self.store.release([self.held.pop(p) for p in over])
            changed = True
        for p in [*sorted(self.held), *(p for p in range(self.partitions)
                                        if p not in self.held)]:
            if p not in self.held and len(self.held) >= share:
                continue
            lease = self.store.acquire(p, self.replica, self.ttl, now)
            before = self.held.get(p)
            if lease is None:
                if before is not None:
                    log.warning("partition %d: lease lost to another replica", p)
                    del self.held[p]
                    changed = True
                continue
            if before is None or before.generation != lease.generation:
                log.info("partition %d: lease taken (generation %d)", p, lease.generation)
                changed = True
            self.held[p] = lease
        return changed

    def owns(self, model: str) -> bool:
        """Whether ``model``'s partition is held here: its drift, rollout and retraining
        decisions are this Monitor's to make."""
        return partition_of(model, self.partitions) in self.held

    def step_down(self, partition: int) -> None:
        self.held.pop(partition, None)

    def release(self) -> None:
        """A graceful stop: the others take the partitions at their next tick."""
        self.store.release(self.held.values())
        self.held.clear()


def cluster_tick(loop: Monitor, owner: PartitionOwner,
                 on_fenced: Callable[[int], None] | None = None) -> StepResult | None:
    """One tick of the loop over the partitions ``owner`` holds; None when a commit was
    fenced off (counted, stepped down, state reloaded: the batch belongs to the new owner)."""
    if owner.renew():
        loop.load()
    try:
        return loop.tick()
    except LeaseLost as lost:
        owner.fenced += 1
        owner.step_down(lost.partition)
        owner.renew()  # steps down from every other lease that moved on too
        log.warning("commit refused: %s; stepped down, holding %s", lost, sorted(owner.held))
        if on_fenced is not None:
            on_fenced(lost.partition)
        loop.load()
        return None


class OwnedPendingLabels(PendingLabels):
    """The labels waiting for their prediction, as one replica's Monitor sees them: only
    those of models in the partitions it holds (another model's label is its owner's to
    join, against statistics only its owner has up to date)."""

    def __init__(self, owner: PartitionOwner) -> None:
        super().__init__()
        self.owner = owner

    def held(self, tx: Transaction) -> list[HeldLabel]:
        return [h for h in super().held(tx) if self.owner.owns(h.model)]

