from __future__ import annotations

import threading

import pytest
import sqlalchemy as sa

from models.deployment import (
    Canary,
    Deployment,
    DeploymentInvalid,
    Shadow,
    apply_patch,
    merge_patch,
    promoted,
    rolled_back,
)
from models.errors import StateConflict
from store import AuditLog, AuditRecord, DeploymentNotFound, DeploymentStore, StaleRevision


def test_merge_patch_follows_rfc7386() -> None:
    assert merge_patch({"a": 1, "b": {"c": 2, "d": 3}}, {"b": {"c": None, "e": 4}}) == \
        {"a": 1, "b": {"d": 3, "e": 4}}
    assert merge_patch({"a": [1, 2]}, {"a": [3]}) == {"a": [3]}
    assert merge_patch({"a": 1}, {"a": None}) == {}


def test_create_then_compare_and_set(engine) -> None:  # type: ignore[no-untyped-def]
    store = DeploymentStore(engine)
    d = store.create(Deployment(model="m", champion="v1"))
    assert d.revision == 1 and d.salt and store.revisions() == {"m": 1}
    d2 = store.replace(apply_patch(d, {"canary": {"version": "v2", "weight": 0.25}}), 1)
    assert d2.revision == 2 and d2.canary == Canary("v2", 0.25) and d2.salt == d.salt
    with pytest.raises(StaleRevision) as err:
        store.replace(apply_patch(d, {"canary": None}), 1)
    assert err.value.current == 2
    assert store.get("m").canary == Canary("v2", 0.25)
    with pytest.raises(DeploymentNotFound):
        store.get("nope")


def test_concurrent_writers_never_both_win(engine) -> None:  # type: ignore[no-untyped-def]
    store = DeploymentStore(engine)
    d = store.create(Deployment(model="race", champion="v1"))
    outcomes: list[str] = []

    def write(weight: float) -> None:
        try:
            store.replace(apply_patch(d, {"canary": {"version": "v2", "weight": weight}}), 1)
            outcomes.append("ok")
        except StaleRevision:
            outcomes.append("stale")

    threads = [threading.Thread(target=write, args=(w / 10,)) for w in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert outcomes.count("ok") == 1 and outcomes.count("stale") == 5
    assert store.get("race").revision == 2


def test_promote_then_rollback_restores_the_champion() -> None:
    d = Deployment(model="m", champion="v1", canary=Canary("v2", 0.1),
                   shadows=(Shadow("v3"),), salt="s", revision=4)
    p = promoted(d)
    assert (p.champion, p.canary, p.history) == ("v2", None, ("v1",))
    r = rolled_back(p)
    assert (r.champion, r.canary, r.history) == ("v1", None, ())
    # nothing to act on is a state conflict (HTTP 409), not an invalid request
    with pytest.raises(StateConflict, match="no canary"):
        promoted(r)
    with pytest.raises(StateConflict, match="no previous champion"):
        rolled_back(r)


@pytest.mark.parametrize("patch,field", [
    ({"champion": {"version": "v9"}}, "champion"),
    ({"bogus": 1}, "bogus"),
    ({"canary": {"version": "v2", "weight": 1.5}}, "canary.weight"),
    ({"canary": {"version": "v1", "weight": 0.5}}, "canary.version"),
    ({"canary": {"weight": 0.5}}, "canary.version"),
    ({"shadows": [{"version": "v3"}, {"version": "v3"}]}, "shadows[1].version"),
    ({"shadows": [{"version": "v1"}]}, "shadows[0].version"),
    ({"shadows": [{"version": "v3", "sample_rate": 0}]}, "shadows[0].sample_rate"),
    ({"routing_key_header": "bad header"}, "routing_key_header"),
])
def test_invalid_patches_name_the_field(patch: dict, field: str) -> None:
    d = Deployment(model="m", champion="v1", salt="s", revision=1)
    with pytest.raises(DeploymentInvalid) as err:
        apply_patch(d, patch)
    assert err.value.field == field


def test_audit_is_append_only_and_newest_first(engine) -> None:  # type: ignore[no-untyped-def]
    audit = AuditLog(engine)
    audit.write(AuditRecord(actor="alice", role="operator", action="deployments.patch",
                            target="deployments/m", outcome="ok", before={"a": 1},
                            after={"a": 2}, request_id="r1"))
    audit.write(AuditRecord(actor="anonymous", role=None, action="audit.read",
                            target="/admin/audit", outcome="denied"))
    rows = audit.recent(10)
    assert [r.actor for r in rows] == ["anonymous", "alice"]
    assert rows[1].before == {"a": 1} and rows[1].after == {"a": 2}
    assert audit.recent(10, action="deployments.patch")[0].request_id == "r1"


def test_a_store_with_a_rollout_upgrades_to_rollout_revisions(engine) -> None:  # type: ignore[no-untyped-def]
    """Migration 0006 on a store that already holds a rollout: the row keeps its document,
    starts at revision 0, and the controller's compare-and-set works on it."""
    import orjson
    import sqlalchemy as sa
    from alembic import command
    from alembic.config import Config

    from monitoring.rollout.controller import Controller, read
    from store.engine import MIGRATIONS, migrate
    from store.rollouts import StaleRollout

    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "0005")
    doc = {"spec": {"candidate": "v2"}, "state": {"status": "running"}}
    with engine.begin() as conn:
        conn.execute(sa.text("INSERT INTO rollouts (model, doc, updated_at) "
                             "VALUES ('m', :doc, 1.0)"), {"doc": orjson.dumps(doc).decode()})
    migrate(engine)
    controller = Controller(engine, [])
    [(model, stored, revision)] = controller.running()
    assert (model, stored, revision) == ("m", doc, 0)
    controller._save("m", {**doc, "analysis": {"at": 2.0}}, 0, 2.0)  # noqa: SLF001
    with pytest.raises(StaleRollout):
        controller._save("m", doc, 0, 3.0)  # noqa: SLF001
    assert read(engine, "m") == {**doc, "analysis": {"at": 2.0}}


def test_put_rows_updates_by_key_and_inserts_the_rest(engine) -> None:  # type: ignore[no-untyped-def]
    """The Monitor's state writes: a row whose key exists is updated in place, the others are
    inserted, and a column named by a reserved word ("offset") works on either database."""
    from store.engine import put_rows
    from store.tables import monitor_checkpoints

    with engine.begin() as conn:
        put_rows(conn, monitor_checkpoints, ("stream",), ("seq", "offset", "updated_at"),
                 [("gw1", 1, 100, 1.0)])
    with engine.begin() as conn:
        put_rows(conn, monitor_checkpoints, ("stream",), ("seq", "offset", "updated_at"),
                 [("gw1", 2, 50, 2.0), ("gw2", 1, 7, 2.0)])
        put_rows(conn, monitor_checkpoints, ("stream",), ("seq", "offset", "updated_at"), [])
    with engine.connect() as conn:
        rows = conn.execute(sa.select(monitor_checkpoints).order_by(
            monitor_checkpoints.c.stream)).all()
    assert [tuple(r) for r in rows] == [("gw1", 2, 50, 2.0), ("gw2", 1, 7, 2.0)]


def test_drift_alarms_stay_open_until_acknowledged_and_rebaselines_queue(engine) -> None:  # type: ignore[no-untyped-def]
    """The drift repository as operators and the Monitor use it: open alarms by version and
    signal, an acknowledgement closes only what it names, a rebaseline request waits until
    the Monitor finishes it, and the version's record shows all of it, newest first."""
    from store import DriftStore, transaction

    drift = DriftStore(engine)
    with transaction(engine) as tx:
        drift.add_alarm(tx, "m", "v1", "input_mean", {"signal": "input_mean"}, 1.0)
        drift.add_alarm(tx, "m", "v1", "error", {"signal": "error"}, 2.0)
        drift.add_alarm(tx, "m", "v2", "error", {"signal": "error"}, 3.0)
    assert drift.open_signals() == {("m", "v1", "input_mean"), ("m", "v1", "error"),
                                    ("m", "v2", "error")}
    assert len(drift.acknowledge("m", "v1", "alice", signal="input_mean", now=5.0)) == 1
    assert drift.acknowledge("m", "v1", "alice", signal="input_mean") == []
    assert drift.open_signals_of("m", "v1") == {"error"}
    rid = drift.request_rebaseline("m", "v1", 500, "bob", now=6.0)
    with transaction(engine) as tx:
        [req] = drift.pending_requests(tx)
        assert (req.id, req.rows, req.requested_by) == (rid, 500, "bob")
        assert len(drift.close_alarms(tx, "m", "v1", "rebaseline:bob", 7.0)) == 1
        drift.finish_request(tx, rid, 7.0, "done: adopted")
        assert drift.pending_requests(tx) == []
    stored = drift.read_version("m", "v1")
    assert [(a.doc["signal"], a.acknowledged_by) for a in stored.alarms] == [
        ("error", "rebaseline:bob"), ("input_mean", "alice")]
    assert (stored.requests[0].outcome, stored.doc) == ("done: adopted", None)
    assert drift.open_signals() == {("m", "v2", "error")}


MIGRATE = """
import sys
from store import make_engine, migrate
migrate(make_engine(sys.argv[1]))
"""


def test_replicas_starting_together_migrate_an_empty_database_once() -> None:
    """Three processes migrate one empty PostgreSQL schema at once, as replicas started
    together do: every one starts (without the lock two failed on a duplicate table)."""
    import os
    import subprocess
    import sys
    import uuid
    from pathlib import Path

    url = os.environ.get("VIGIL_TEST_POSTGRES_URL")
    if not url:
        pytest.skip("VIGIL_TEST_POSTGRES_URL is not set: concurrent migrations need PostgreSQL")
    schema = f"t_{uuid.uuid4().hex[:10]}"
    admin = sa.create_engine(url)
    with admin.begin() as conn:
        conn.execute(sa.text(f"CREATE SCHEMA {schema}"))
    root = Path(__file__).resolve().parent.parent
    try:
        procs = [subprocess.Popen([sys.executable, "-c", MIGRATE,
                                   f"{url}?options=-csearch_path%3D{schema}"],
                                  cwd=root, env={**os.environ, "PYTHONPATH": str(root)},
                                  stderr=subprocess.PIPE, text=True) for _ in range(3)]
        errors = [p.communicate(timeout=120)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0, 0], errors
        with admin.begin() as conn:
            versions = conn.execute(sa.text(f"SELECT version_num FROM {schema}.alembic_version"))
            assert len(versions.all()) == 1
    finally:
        with admin.begin() as conn:
            conn.execute(sa.text(f"DROP SCHEMA {schema} CASCADE"))
        admin.dispose()
