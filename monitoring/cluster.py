"""The Monitor of one replica among several (``log.backend: nats``): which partitions of the
log it holds, its heartbeat, and its tick around the one-machine loop.

Kafka's consumer keeps two clocks apart, and so does this: a heartbeat thread
(``Heartbeat`` calling ``PartitionOwner.beat`` every lease / 3) renews the leases held, same
generation, expiry pushed out, however long a step takes; the loop's own liveness is a
second bound (``max_tick``, ``log.nats.max_tick_seconds``, as ``max.poll.interval.ms``): a
loop that has not completed a tick for longer stops the heartbeat's renewals, so a wedged
loop loses its partitions to a healthy replica. Which partitions are held changes only in
the loop, between two commits: each tick ``PartitionOwner.renew`` steps down from a lease the
heartbeat found lost, hands over what is above this replica's share, and takes any
partition that is free or whose lease expired (``store.cluster.LeaseStore``). When the set
of partitions or a generation changed, the loop reloads its state from the store, so a
partition taken over is read from the checkpoint its last owner committed. Every step's
commit is fenced by the leases (``monitoring.log.consumer.NatsEventLog.commit``): a Monitor
that was paused past its lease (its heartbeat paused with it) and wakes between its read and
its commit has that commit refused (``LeaseLost``); it counts it, steps down from the
partition and reloads.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from monitoring.log.partitions import partition_of
from monitoring.monitor import Monitor, StepResult
from store import Lease, LeaseLost, LeaseStore, PendingLabels, Transaction
from store.predictions import HeldLabel

log = logging.getLogger("vigil.monitor")


class PartitionOwner:
    """The leases this replica holds, by partition. ``held`` changes its partitions only in
    the loop's thread (``renew``, ``step_down``, ``release``); the heartbeat's thread
    (``beat``) only pushes out the expiry of a lease still held at its generation, or marks
    it ``lost`` for the loop to step down from."""

    def __init__(self, leases: LeaseStore, replica: str, partitions: int, ttl: float,
                 clock: Callable[[], float] = time.time,
                 live: Callable[[], int] | None = None, max_tick: float | None = None,
                 on_stall: Callable[[], None] | None = None) -> None:
        """``live()``: how many replicas' Monitors run (this one included); with it each
        holds at most its share, ceil(partitions / live), and gives up what is over it.
        ``max_tick``: seconds the loop may go without completing a tick (``ticked``) before
        ``beat`` stops renewing; ``on_stall()`` is called each time it stops."""
        self.store = leases
        self.live = live
        self.replica = replica
        self.partitions = partitions
        self.ttl = ttl
        self.clock = clock
        self.max_tick = max_tick
        self.on_stall = on_stall
        self.held: dict[int, Lease] = {}
        self.lost: set[int] = set()  # found lost by the heartbeat; dropped at the next tick
        self.fenced = 0  # commits refused because a lease had moved on
        self.stalls = 0  # times the loop outlived max_tick and the renewals stopped
        self.last_tick = clock()
        self._stalled = False
        self._lock = threading.RLock()

    def leases(self) -> dict[int, Lease]:
        """A copy of the leases held (what a commit fences)."""
        with self._lock:
            return dict(self.held)

    def renew(self) -> bool:
        """Step down from the leases the heartbeat found lost, renew what is held, take what
        is free or expired; True when anything changed (a partition gained or lost, or a
        generation moved)."""
        with self._lock:
            now = self.clock()
            changed = False
            for p in sorted(self.lost & set(self.held)):
                log.warning("partition %d: lease lost (found by the heartbeat); stepping down", p)
                del self.held[p]
                changed = True
            self.lost.clear()
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

    def ticked(self) -> None:
        """The loop completed a tick: it is live (``beat`` renews again)."""
        with self._lock:
            self.last_tick = self.clock()
            if self._stalled:
                log.warning("the Monitor's loop completed a tick again; renewing its leases")
                self._stalled = False

    def beat(self) -> bool:
        """The heartbeat: push out the expiry of every lease still held at its generation,
        and mark ``lost`` the ones that are not (taken over, or expired). Nothing is renewed
        while the loop has not completed a tick for longer than ``max_tick``; returns False
        then (the loop is not live), True otherwise."""
        now = self.clock()
        with self._lock:
            if self.max_tick is not None and now - self.last_tick > self.max_tick:
                if not self._stalled:
                    self._stalled = True
                    self.stalls += 1
                    log.error("the Monitor's loop has not completed a tick for %.0f s (more "
                              "than log.nats.max_tick_seconds, %g s): its leases %s are no "
                              "longer renewed and go to another replica", now - self.last_tick,
                              self.max_tick, sorted(self.held))
                    if self.on_stall is not None:
                        self.on_stall()
                return False
            sent = {p: lease for p, lease in self.held.items() if p not in self.lost}
        if not sent:
            return True
        # outside the lock: the loop's commit may hold these rows (PostgreSQL) or the
        # database (SQLite) while it reads ``held``; this waits for that commit instead
        renewed = {lease.partition: lease for lease in self.store.renew(sent.values(), self.ttl,
                                                                        now)}
        with self._lock:
            for p, lease in sent.items():
                current = self.held.get(p)
                if current is None or current.generation != lease.generation:
                    continue  # the loop changed it meanwhile; its own acquire decides
                if p in renewed:
                    self.held[p] = renewed[p]
                else:
                    log.warning("partition %d: lease of generation %d lost; the loop steps "
                                "down at its next tick", p, lease.generation)
                    self.lost.add(p)
        return True

    def owns(self, model: str) -> bool:
        """Whether ``model``'s partition is held here: its drift, rollout and retraining
        decisions are this Monitor's to make."""
        p = partition_of(model, self.partitions)
        return p in self.held and p not in self.lost

    def step_down(self, partition: int) -> None:
        with self._lock:
            self.held.pop(partition, None)

    def release(self) -> None:
        """A graceful stop: the others take the partitions at their next tick."""
        with self._lock:
            self.store.release(self.held.values())
            self.held.clear()


class Heartbeat:
    """A daemon thread calling ``beat()`` every ``interval`` seconds until ``stop``: the
    leases' renewal apart from the loop (``PartitionOwner.beat``), as Kafka's consumer
    heartbeats apart from its poll loop. A failed beat is logged and tried again at the next."""

    def __init__(self, beat: Callable[[], object], interval: float,
                 name: str = "vigil-heartbeat") -> None:
        self.beat = beat
        self.interval = interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> Heartbeat:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread.is_alive() and self._thread is not threading.current_thread():
            self._thread.join(timeout=self.interval + 30)

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            try:
                self.beat()
            except Exception:
                log.exception("heartbeat failed; renewing again in %.2f s", self.interval)


def cluster_tick(loop: Monitor, owner: PartitionOwner,
                 on_fenced: Callable[[int], None] | None = None) -> StepResult | None:
    """One tick of the loop over the partitions ``owner`` holds; None when a commit was
    fenced off (counted, stepped down, state reloaded: the batch belongs to the new owner)."""
    try:
        if owner.renew():
            loop.load()
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
    finally:  # a tick that failed still came round: the loop is live
        owner.ticked()


class OwnedPendingLabels(PendingLabels):
    """The labels waiting for their prediction, as one replica's Monitor sees them: only
    those of models in the partitions it holds (another model's label is its owner's to
    join, against statistics only its owner has up to date)."""

    def __init__(self, owner: PartitionOwner) -> None:
        super().__init__()
        self.owner = owner

    def held(self, tx: Transaction) -> list[HeldLabel]:
        return [h for h in super().held(tx) if self.owner.owns(h.model)]

