"""service/artifacts.py: a version registered through one replica is pulled, checked and
installed by another replica's process (its own BentoML home, the same store), which then
serves it; registration is audited in the transaction that shares it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import sqlalchemy as sa

from models.registry import Registry
from service.artifacts import SharedRegistry
from service.bootstrap import seed_demo
from store import AuditLog, DeploymentStore, make_engine, migrate
from store.artifacts import ArtifactStore
from store.audit import AuditRecord
from store.transaction import Transaction
from tests.conftest import ROOT, demo_files

# a second replica: its own BentoML home, the same store
REPLICA = """
import json, sys
import bentoml
from models.errors import VersionConflict
from service.artifacts import SharedRegistry
from store import make_engine
from store.artifacts import ArtifactStore
from tests.conftest import demo_files

reg = SharedRegistry(ArtifactStore(make_engine(sys.argv[1]), 10**9), "r2")
assert not reg.has("breast_cancer", "v2")
listed = reg.list()
mv = reg.get("breast_cancer", "v2")  # pulled, checked, installed
runtime = mv.load()  # and smoke-tested on its reference rows, as a worker does
again, created = reg.register(*demo_files("breast_cancer", "v1"))
onnx, card, ref = demo_files("breast_cancer", "v2")
card["version"] = "v1"
try:
    reg.register(onnx, card, ref)
    conflict = None
except VersionConflict as exc:
    conflict = exc.message
print(json.dumps({
    "listed": listed, "digest": mv.digest, "onnx_sha256": mv.onnx_sha256,
    "profile": mv.profile, "classes": list(runtime.card.class_labels),
    "local": sorted(str(m.tag) for m in bentoml.models.list()),
    "v1_created": created, "conflict": conflict}))
"""


@pytest.fixture
def db(tmp_path: Path) -> tuple[str, sa.Engine]:
    url = f"sqlite:///{tmp_path / 'vigil.db'}"
    engine = make_engine(url)
    migrate(engine)
    return url, engine


def test_a_version_shared_by_one_replica_is_served_by_another(
        db: tuple[str, sa.Engine], registry: Registry, tmp_path: Path) -> None:
    url, engine = db
    shared = SharedRegistry(ArtifactStore(engine, 10**9), "r1")
    assert {"breast_cancer:v1", "breast_cancer:v2", "diabetes:v1"} <= set(shared.share_local())
    assert shared.share_local() == []
    home = tmp_path / "replica2-bentoml"
    out = subprocess.run([sys.executable, "-c", REPLICA, url], cwd=ROOT, check=True,
                         capture_output=True, text=True,
                         env={**os.environ, "BENTOML_HOME": str(home),
                              "PYTHONPATH": str(ROOT)})
    seen = json.loads(out.stdout.strip().splitlines()[-1])
    assert seen["listed"]["breast_cancer"][:3] == ["v1", "v2", "v3"]
    here = registry.get("breast_cancer", "v2")
    assert seen["digest"] == here.digest and seen["onnx_sha256"] == here.onnx_sha256
    assert seen["profile"] == here.profile  # not recomputed: the registered one
    assert seen["classes"] == ["malignant", "benign"]
    assert "breast_cancer:v2" in seen["local"] and "breast_cancer:v3" not in seen["local"]
    assert seen["v1_created"] is False  # the same bytes: already in the cluster
    assert "other content" in seen["conflict"]


def test_registration_and_its_audit_commit_together(
        db: tuple[str, sa.Engine], registry: Registry) -> None:
    _, engine = db
    shared = SharedRegistry(ArtifactStore(engine, 10**9), "r1")
    audit = AuditLog(engine)
    onnx, card, ref = demo_files("diabetes", "v1")
    card["version"] = "audited"

    def failing(tx: object, mv: object) -> None:
        raise RuntimeError("the audit could not be written")

    with pytest.raises(RuntimeError):
        shared.register(onnx, card, ref, "reference.csv", failing)
    assert shared.artifacts.get("diabetes", "audited") is None and audit.recent() == []

    def audited(tx: Transaction, mv: object) -> None:
        audit.write(AuditRecord(actor="a", role="admin", action="models.register",
                                target="models/diabetes/versions/audited", outcome="ok"), tx)

    mv, created = shared.register(onnx, card, ref, "reference.csv", audited)
    assert created and mv.version == "audited"  # shared now, though local since the failure
    assert shared.artifacts.get("diabetes", "audited") is not None
    assert [r.target for r in audit.recent()] == ["models/diabetes/versions/audited"]
    _, again = shared.register(onnx, card, ref, "reference.csv", audited)
    assert not again and len(audit.recent()) == 1
    assert "audited" in shared.list()["diabetes"]



def test_replicas_seeding_the_demo_together_share_it_once(
        db: tuple[str, sa.Engine], registry: Registry) -> None:
    """Two starts that both found the store empty: the second's versions and deployments are
    already there, and neither start fails."""
    _, engine = db
    shared = SharedRegistry(ArtifactStore(engine, 10**9), "r1")
    store = DeploymentStore(engine)
    seed_demo(shared, store)
    revisions = store.revisions()
    seed_demo(SharedRegistry(ArtifactStore(engine, 10**9), "r2"), store)
    assert store.revisions() == revisions == {"breast_cancer": 1, "diabetes": 1}
    assert {"v1", "v2", "v3"} <= set(shared.artifacts.versions()["breast_cancer"])


@pytest.mark.parametrize("call", ["ensure", "get"])
def test_a_version_another_process_is_installing_is_waited_for(
        db: tuple[str, sa.Engine], registry: Registry, tmp_path: Path, call: str) -> None:
    """BentoML's save makes the version's directory, then copies its files: a worker whose
    ``has`` sees the directory while another worker of the replica is still copying must
    wait for that install (its pull lock) before loading it, not load half a version."""
    import fcntl
    import threading

    _, engine = db
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    shared = SharedRegistry(ArtifactStore(engine, 10**9), "r1", scratch)
    done = threading.Event()

    def load() -> None:
        getattr(shared, call)("breast_cancer", "v1")
        done.set()

    with (scratch / "pull.lock").open("a") as lock:  # another process, mid-install
        fcntl.flock(lock, fcntl.LOCK_EX)
        worker = threading.Thread(target=load, daemon=True)
        worker.start()
        assert not done.wait(2.0), "went on while the version was being installed"
        fcntl.flock(lock, fcntl.LOCK_UN)
    worker.join(30)
    assert done.is_set()


def test_a_pull_that_cannot_be_written_here_is_unavailable_and_counted(
        db: tuple[str, sa.Engine], registry: Registry, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A full or unwritable disk on this replica is a failed pull like a store outage:
    ``ArtifactUnavailable`` (LiveDeployments tries it again later; an OSError is taken for a
    version that failed to load and is not tried again before the next revision), counted."""
    import errno

    from models.errors import ArtifactUnavailable

    _, engine = db
    failures: list[tuple[str, str]] = []
    shared = SharedRegistry(ArtifactStore(engine, 10**9), "r1", tmp_path / "scratch",
                            lambda m, v: failures.append((m, v)))
    shared.share_local()
    (tmp_path / "scratch").mkdir()

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(shared.artifacts, "_fetch_part", full)
    with pytest.raises(ArtifactUnavailable, match="No space left on device"):
        shared.pull("diabetes", "v1")
    assert failures == [("diabetes", "v1")]


def test_a_pull_under_the_lock_installs_and_returns(
        db: tuple[str, sa.Engine], registry: Registry, tmp_path: Path) -> None:
    """A version missing here is pulled under the replica's pull lock, and installing it
    reads it back through the same registry: that read must not wait for the lock its own
    pull holds."""
    import threading
    import uuid

    import bentoml

    _, engine = db
    shared = SharedRegistry(ArtifactStore(engine, 10**9), "r1", tmp_path / "scratch")
    onnx, card, ref = demo_files("diabetes", "v1")
    card["version"] = f"pull-{uuid.uuid4().hex[:8]}"
    shared.register(onnx, card, ref, "reference.csv")
    bentoml.models.delete(f"diabetes:{card['version']}")  # shared, not here any more
    assert not shared.has("diabetes", card["version"])
    done = threading.Event()

    def ensure() -> None:
        shared.ensure("diabetes", card["version"])
        done.set()

    threading.Thread(target=ensure, daemon=True).start()
    assert done.wait(30), "the pull waited for its own lock"
    assert shared.has("diabetes", card["version"])


def test_a_local_version_other_than_the_shared_one_is_not_served(
        db: tuple[str, sa.Engine], registry: Registry, tmp_path: Path) -> None:
    """A replica whose own model store holds other bytes under a version's name than the
    cluster registered (logged at start, not fatal) must not serve them as that version:
    the worker applying a revision that names it stays behind, counted, and says why."""
    from models.errors import ArtifactUnavailable
    from store.transaction import transaction

    _, engine = db
    failures: list[tuple[str, str]] = []
    shared = SharedRegistry(ArtifactStore(engine, 10**9), "r1", tmp_path / "scratch",
                            lambda m, v: failures.append((m, v)))
    mine = registry.get("diabetes", "v1")
    with transaction(engine) as tx:  # another replica registered other bytes as diabetes:v1
        shared.artifacts.share(tx, "diabetes", "v1", "0" * 64, mine.files, "r2")
    with pytest.raises(ArtifactUnavailable, match="differs from the one registered"):
        shared.ensure("diabetes", "v1")
    assert failures == [("diabetes", "v1")]
    shared.ensure("breast_cancer", "v1")  # not shared at all: this replica's own, served
