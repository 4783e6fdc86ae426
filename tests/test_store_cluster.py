"""Partition leases: taken when free, renewed by their owner, taken over only after expiry
with a new generation, and a commit fenced off once its generation is gone."""

from __future__ import annotations

import time

import pytest

from store import EventIds, LeaseLost, LeaseStore, ReplicaStore, transaction


def test_a_lease_is_held_renewed_and_taken_over_after_expiry(engine) -> None:  # type: ignore[no-untyped-def]
    leases = LeaseStore(engine)
    a = leases.acquire(0, "a", ttl=5, now=100)
    assert a is not None and (a.owner, a.generation, a.expires_at) == ("a", 1, 105)
    assert leases.acquire(0, "b", ttl=5, now=104) is None
    renewed = leases.acquire(0, "a", ttl=5, now=104)
    assert renewed is not None and renewed.generation == 1 and renewed.expires_at == 109
    assert leases.acquire(0, "b", ttl=5, now=108.9) is None
    b = leases.acquire(0, "b", ttl=5, now=109)
    assert b is not None and (b.owner, b.generation) == ("b", 2)
    assert [(x.partition, x.owner, x.generation) for x in leases.all()] == [(0, "b", 2)]


def test_a_stale_generation_cannot_commit(engine) -> None:  # type: ignore[no-untyped-def]
    leases = LeaseStore(engine)
    ids = EventIds(engine)
    a = leases.acquire(3, "a", ttl=5, now=100)
    assert a is not None
    with transaction(engine) as tx:  # the owner commits
        leases.fence(tx, [a], now=101)
        ids.add(tx, [("e1", 3)], now=101)
    assert leases.acquire(3, "b", ttl=5, now=106) is not None  # a paused past its expiry
    with pytest.raises(LeaseLost), transaction(engine) as tx:
        ids.add(tx, [("e2", 3)], now=107)
        leases.fence(tx, [a], now=107)
    assert ids.known(["e1", "e2"]) == {"e1"}, "the fenced commit wrote nothing"


def test_released_leases_are_taken_at_once(engine) -> None:  # type: ignore[no-untyped-def]
    leases = LeaseStore(engine)
    a = leases.acquire(1, "a", ttl=30, now=100)
    assert a is not None
    leases.release([a])
    b = leases.acquire(1, "b", ttl=30, now=101)
    assert b is not None and b.generation == 2


def test_replicas_and_event_ids(engine) -> None:  # type: ignore[no-untyped-def]
    replicas = ReplicaStore(engine)
    replicas.seen("r1", "http://10.0.0.1:3000", 42, now=100)
    replicas.seen("r1", "http://10.0.0.1:3000", 43, now=101)
    assert [(r.id, r.monitor_pid, r.last_seen) for r in replicas.all()] == [("r1", 43, 101)]
    replicas.seen("r2", "http://10.0.0.2:3000", 7, now=101)
    replicas.left("r2")  # a graceful stop
    assert [r.id for r in replicas.all()] == ["r1"]
    ids = EventIds(engine)
    with transaction(engine) as tx:
        ids.add(tx, [(f"e{i}", 0) for i in range(1200)], now=100)
    assert len(ids.known([f"e{i}" for i in range(0, 2000, 2)])) == 600
    assert ids.expire(before=101) == 1200


def test_counters_merge_by_the_larger_count(engine) -> None:  # type: ignore[no-untyped-def]
    from store import MonitorStateStore, reading

    state = MonitorStateStore(engine)
    with transaction(engine) as tx:  # replica a counts iris, holds a stale copy of wine
        state.put_counters(tx, {"iris": {"joined": 5}, "wine": {"joined": 1}}, now=1)
    with transaction(engine) as tx:  # replica b counts wine, holds a stale copy of iris
        state.put_counters(tx, {"iris": {"joined": 2}, "wine": {"joined": 7, "unmatched": 1}},
                           now=2)
    with reading(engine) as tx:
        assert state.get_document(tx, "counters") == {
            "iris": {"joined": 5}, "wine": {"joined": 7, "unmatched": 1}}


def test_a_replica_joins_only_the_pending_labels_of_its_partitions(engine) -> None:  # type: ignore[no-untyped-def]
    from monitoring.cluster import OwnedPendingLabels, PartitionOwner
    from monitoring.log.partitions import partition_of

    models = ["iris", "wine", "diabetes", "breast_cancer"]
    mine = partition_of("iris", 4)
    owner = PartitionOwner(LeaseStore(engine), "a", 4, ttl=10, clock=lambda: 100.0)
    lease = owner.store.acquire(mine, "a", 10, 100.0)
    assert lease is not None
    owner.held = {mine: lease}
    pending = OwnedPendingLabels(owner)
    with transaction(engine) as tx:
        pending.hold(tx, [({"model": m, "request_id": f"r-{m}", "label": 0}, 1.0)
                          for m in models])
    with transaction(engine) as tx:
        held = {h.model for h in pending.held(tx)}
    assert held == {m for m in models if partition_of(m, 4) == mine}
    assert "iris" in held


def test_a_model_policy_fires_only_at_its_partition_owner(engine) -> None:  # type: ignore[no-untyped-def]
    from monitoring.retrain.policy import Policy
    from monitoring.retrain.triggers import Triggers
    from monitoring.retrain.webhooks import Target
    from store import DriftStore

    with transaction(engine) as tx:
        DriftStore(engine).add_alarm(tx, "m", "v1", "input_mean",
                                     {"signal": "input_mean", "version": "v1"}, 1.0)

    def replica(owns: bool) -> Triggers:
        t = Triggers(engine, {"m": Policy("m", drift_signals=("input_mean",))},
                     [Target("t", "generic", "http://127.0.0.1:9")],
                     lambda model: ("v1", 0.0, {}), "http://gw")
        t.owns = lambda model: owns
        return t

    assert replica(owns=False).evaluate({}, 10.0) == []
    assert len(replica(owns=True).evaluate({}, 10.0)) == 1


def test_a_rollout_steps_only_at_its_partition_owner(engine) -> None:  # type: ignore[no-untyped-def]
    from monitoring.rollout.controller import Controller

    stepped: list[str] = []
    c = Controller(engine, [], owns=lambda model: model == "mine")
    c.running = lambda: [(m, {"state": {"status": "running"}}, 1)  # type: ignore[method-assign]
                         for m in ("mine", "theirs")]
    c._step = lambda model, *a: stepped.append(model)  # type: ignore[method-assign]
    c.tick({}, now=1.0)
    assert stepped == ["mine"]


def test_partitions_are_shared_out_as_replicas_join_and_leave(engine) -> None:  # type: ignore[no-untyped-def]
    from monitoring.cluster import PartitionOwner

    now = [100.0]
    live = {"n": 1}
    leases = LeaseStore(engine)
    a = PartitionOwner(leases, "a", 5, ttl=5, clock=lambda: now[0], live=lambda: live["n"])
    b = PartitionOwner(leases, "b", 5, ttl=5, clock=lambda: now[0], live=lambda: live["n"])
    assert a.renew() and sorted(a.held) == [0, 1, 2, 3, 4]
    live["n"] = 2  # b's Monitor is seen
    assert not b.renew() and b.held == {}  # nothing free yet
    assert a.renew() and sorted(a.held) == [0, 1, 2]  # its share: ceil(5 / 2)
    assert b.renew() and sorted(b.held) == [3, 4]
    now[0] += 1
    assert not a.renew() and not b.renew()  # stable
    live["n"] = 1  # a stops being seen; its leases run out
    now[0] += 6
    assert b.renew() and sorted(b.held) == [0, 1, 2, 3, 4]
    assert {x.owner for x in leases.all()} == {"b"}


def test_a_rebaseline_is_carried_out_only_at_its_partition_owner(engine) -> None:  # type: ignore[no-untyped-def]
    from monitoring.drift.base import DriftConfig
    from monitoring.drift.tracker import DriftTracker
    from store import DriftStore

    DriftStore(engine).request_rebaseline("m", "v1", 500, "bob", now=1.0)
    tracker = DriftTracker(engine, lambda m, v: None, DriftConfig())
    tracker.owns = lambda model: False
    with transaction(engine) as tx:
        tracker.process_requests(tx, now=2.0)
        assert len(DriftStore(engine).pending_requests(tx)) == 1, "left to its owner"
    tracker.owns = lambda model: True
    with transaction(engine) as tx:
        tracker.process_requests(tx, now=2.0)  # no detectors for m:v1: failed, but done
        assert DriftStore(engine).pending_requests(tx) == []


def test_the_heartbeat_keeps_the_leases_of_a_step_longer_than_the_lease(engine) -> None:  # type: ignore[no-untyped-def]
    """A step of 10 s with a 3 s lease: the heartbeat (a beat a second) renews the leases at
    their generation, another replica cannot take them, and the step's commit goes through."""
    from monitoring.cluster import PartitionOwner

    now = [100.0]
    leases = LeaseStore(engine)
    a = PartitionOwner(leases, "a", 2, ttl=3, clock=lambda: now[0], max_tick=30)
    b = PartitionOwner(leases, "b", 2, ttl=3, clock=lambda: now[0])
    assert a.renew() and sorted(a.held) == [0, 1]
    a.ticked()
    fenced = a.leases()  # what the step's commit fences
    for _ in range(10):
        now[0] += 1
        assert a.beat()
        assert not b.renew() and b.held == {}
    with transaction(engine) as tx:
        leases.fence(tx, fenced.values(), now=now[0])
    a.ticked()
    assert not a.renew(), "the same partitions at the same generations: nothing to reload"
    assert [(x.owner, x.generation, x.expires_at) for x in leases.all()] == [
        ("a", 1, 113.0), ("a", 1, 113.0)]


def test_a_loop_wedged_past_max_tick_loses_its_leases(engine) -> None:  # type: ignore[no-untyped-def]
    """The loop completes no tick after t=100 (max tick 6 s, lease 3 s): the heartbeat
    renews until 106, then stops (counted once); the other replica takes the partitions when
    the last renewal expires, the wedged loop's commit is refused and it steps down."""
    from monitoring.cluster import PartitionOwner

    now = [100.0]
    stalls: list[float] = []
    leases = LeaseStore(engine)
    a = PartitionOwner(leases, "a", 2, ttl=3, clock=lambda: now[0], max_tick=6,
                       on_stall=lambda: stalls.append(now[0]))
    b = PartitionOwner(leases, "b", 2, ttl=3, clock=lambda: now[0])
    a.renew()
    a.ticked()
    fenced = a.leases()
    beats, taken = [], None
    for _ in range(12):
        now[0] += 1
        beats.append(a.beat())
        if b.renew() and taken is None:
            taken = now[0]
    assert beats == [True] * 6 + [False] * 6
    assert stalls == [107.0] and a.stalls == 1
    assert taken == 109.0 and sorted(b.held) == [0, 1]  # 106 + the lease
    assert {(x.owner, x.generation) for x in leases.all()} == {("b", 2)}
    with pytest.raises(LeaseLost), transaction(engine) as tx:
        leases.fence(tx, fenced.values(), now=now[0])
    a.ticked()  # the loop came round: the heartbeat renews again, and finds them lost
    assert a.beat() and a.lost == {0, 1}
    assert a.renew() and a.held == {} and not a.owns("iris")


def test_a_heartbeat_thread_renews_while_the_step_sleeps(engine) -> None:  # type: ignore[no-untyped-def]
    """The real thread: a step sleeping 3 leases keeps its leases (the other replica polling
    all along gets nothing); with the heartbeat stopped, the other takes them after expiry."""
    from monitoring.cluster import Heartbeat, PartitionOwner

    leases = LeaseStore(engine)
    a = PartitionOwner(leases, "a", 2, ttl=1.5, max_tick=60)
    b = PartitionOwner(leases, "b", 2, ttl=1.5)
    a.renew()
    a.ticked()
    generations = {p: lease.generation for p, lease in a.held.items()}
    heartbeat = Heartbeat(a.beat, 1.5 / 3).start()
    try:
        end = time.monotonic() + 4.5  # the slow step
        while time.monotonic() < end:
            assert not b.renew() and b.held == {}
            time.sleep(0.1)
    finally:
        heartbeat.stop()
    assert {p: lease.generation for p, lease in a.leases().items()} == generations
    assert a.lost == set()
    end = time.monotonic() + 30
    while not b.held and time.monotonic() < end:  # no heartbeat: expired within a lease
        time.sleep(0.1)
        b.renew()
    assert sorted(b.held) == [0, 1]
